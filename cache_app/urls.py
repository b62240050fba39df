from django.urls import path

from cache_app import api

app_name = "cache_app"

urlpatterns = [
    path("llm/generate/", api.GenerateView.as_view(), name="llm-generate"),
    path("rag/query/", api.RAGQueryView.as_view(), name="rag-query"),
    path("cache/statistics/", api.StatisticsView.as_view(), name="statistics"),
    path("cache/invalidate/", api.LayersInvalidateView.as_view(), name="invalidate-layers"),
    path(
        "masterplans/<uuid:masterplan_id>/invalidate/",
        api.MasterplanInvalidateView.as_view(),
        name="invalidate-masterplan",
    ),
]
