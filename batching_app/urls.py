"""batching_app's routes of the v2 API, mounted at ``/api/v2/``."""

from django.urls import path

from batching_app import api

app_name = "batching_app"

urlpatterns = [
    path("llm/waves", api.WavesView.as_view(), name="waves"),
    path("llm/waves/<uuid:wave_id>", api.WaveView.as_view(), name="wave"),
]
