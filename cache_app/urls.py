from django.urls import path

from . import api

app_name = "cache_app"

urlpatterns = [
    path("llm/generate/", api.GenerateView.as_view(), name="llm-generate"),
    path("rag/query/", api.RAGQueryView.as_view(), name="rag-query"),
    path("waves/", api.WaveView.as_view(), name="waves"),
    path("cache/statistics/", api.StatisticsView.as_view(), name="statistics"),
    path("cache/invalidate/", api.LayersInvalidateView.as_view(), name="invalidate-layers"),
    path(
        "masterplans/<uuid:masterplan_id>/invalidate/",
        api.MasterplanInvalidateView.as_view(),
        name="invalidate-masterplan",
    ),
]
