import logging

from django.apps import AppConfig
from django.conf import settings

logger = logging.getLogger("mgecache")


class CacheAppConfig(AppConfig):
    name = "cache_app"
    verbose_name = "mgecache: caches, policies and masterplans"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from cache_app import (
            checks,  # noqa: F401
            signals,  # noqa: F401  (registration side effects)
        )

        if getattr(settings, "REDIS_EMBEDDED", False):
            logger.warning(
                "REDIS_URL is not set: using an embedded in-process Redis (fakeredis). "
                "This is for development and tests only, not for production."
            )
