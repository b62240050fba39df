from django.contrib import admin
from django.urls import include, path

from cache_app.access.schema import DocsView, SchemaView
from cache_app.views import healthz, metrics

# Every route has an access rule; tests/test_routes.py fails for a route without one.
urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="prometheus-django-metrics"),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/v2/", include("cache_app.urls")),
    path("api/v2/", include("batching_app.urls")),
    path("v1/", include("cache_app.gateway.urls")),
]

# API paths answer JSON even for Django-level errors (cache_app.access.errors).
handler400 = "cache_app.access.errors.bad_request"
handler403 = "cache_app.access.errors.permission_denied"
handler404 = "cache_app.access.errors.page_not_found"
handler500 = "cache_app.access.errors.server_error"
