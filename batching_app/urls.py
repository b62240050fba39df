from django.urls import path

from batching_app import api

app_name = "batching_app"

urlpatterns = [
    path("waves/", api.WaveView.as_view(), name="waves"),
]
