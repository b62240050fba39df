"""Who may do what: roles, API keys, masterplan scope, input bounds, throttles and JSON errors.

A new API view reuses all of it by declaring its permission and throttle classes and
calling :func:`cache_app.access.scope.check_masterplan_scope` for each masterplan it
touches::

    from cache_app.access.permissions import CanUsePipeline
    from cache_app.access.scope import check_masterplan_scope
    from cache_app.access.throttles import GenerateThrottle

    class MyView(APIView):
        permission_classes = [CanUsePipeline]
        throttle_classes = [GenerateThrottle]

        def post(self, request):
            ...
            check_masterplan_scope(request, masterplan_id)  # 403 outside the key's set

Authentication (``Authorization: Bearer <key>`` or the admin session), the JSON parser
with its size and depth bounds, and the exception handler are project-wide DRF settings.
See docs/operations.md, "Access control".
"""
