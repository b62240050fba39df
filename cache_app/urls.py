from django.urls import path

from . import api

app_name = "cache_app"

urlpatterns = [
    path("cache/statistics/", api.StatisticsView.as_view(), name="statistics"),
    path("cache/invalidate/", api.LayersInvalidateView.as_view(), name="invalidate-layers"),
    path(
        "masterplans/<uuid:masterplan_id>/invalidate/",
        api.MasterplanInvalidateView.as_view(),
        name="invalidate-masterplan",
    ),
]
