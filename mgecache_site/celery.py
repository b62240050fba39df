"""The Celery app. Configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgecache_site.settings")

app = Celery("mgecache")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="mgecache.ping", acks_late=True)
def ping() -> str:
    """A trivial task for health checks and the worker integration test."""
    return "pong"
