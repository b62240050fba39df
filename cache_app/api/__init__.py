"""The v2 API of cache_app (``/api/v2/``): thin DRF views that parse, call one function, report.

Access: each view declares its permission and throttle classes (``cache_app.access``) and
checks the masterplan scope of what it touches; errors are JSON (``cache_app.access.errors``).
Every status a view can answer is documented in the schema (``cache_app.api.schema``).
"""
