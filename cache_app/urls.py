"""cache_app's routes of the v2 API, mounted at ``/api/v2/`` (the wave routes are batching_app's)."""

from django.urls import path, re_path

from cache_app.api import invalidation, masterplans, pipeline, policies, statistics

app_name = "cache_app"

urlpatterns = [
    path("llm/generate", pipeline.GenerateView.as_view(), name="llm-generate"),
    path("rag/query", pipeline.RAGQueryView.as_view(), name="rag-query"),
    path("cache/statistics", statistics.StatisticsView.as_view(), name="statistics"),
    re_path(
        r"^cache/statistics/(?P<layer>llm|rag|batching)$",
        statistics.LayerStatisticsView.as_view(),
        name="layer-statistics",
    ),
    path("cache/invalidate", invalidation.InvalidateView.as_view(), name="invalidate"),
    path("cache/invalidations/<uuid:invalidation_id>", invalidation.InvalidationView.as_view(), name="invalidation"),
    path("masterplans", masterplans.MasterplanListView.as_view(), name="masterplans"),
    path("masterplans/<uuid:masterplan_id>", masterplans.MasterplanDetailView.as_view(), name="masterplan"),
    re_path(r"^cache/policies/(?P<layer>llm|rag)$", policies.CachePolicyView.as_view(), name="cache-policy"),
    path("batching/policy", policies.BatchPolicyView.as_view(), name="batching-policy"),
]
