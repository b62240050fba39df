from django.apps import AppConfig


class BatchingAppConfig(AppConfig):
    name = "batching_app"
    verbose_name = "mgecache: request batching"
    default_auto_field = "django.db.models.BigAutoField"
