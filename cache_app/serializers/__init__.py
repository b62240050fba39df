"""Request and response serializers of the v2 API: strict, typed, and documented in the schema.

``fields`` holds the strict JSON fields every serializer is built from; ``pipeline`` the
generation and retrieval bodies; ``operations`` statistics, invalidations, masterplans and policies.
"""
