"""Access-control models: the custom permissions the roles are made of, and API keys.

Imported by ``cache_app.models`` so that they belong to the ``cache_app`` app.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework_api_key.models import AbstractAPIKey


class AccessPermission(models.Model):
    """No table: only the anchor of mgecache's own permissions (``cache_app.<codename>``)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("use_pipeline", "Generate, retrieve, run waves and read the statistics of usable masterplans"),
            ("invalidate_cache", "Invalidate cached answers (a masterplan or whole layers)"),
            ("tune_policy", "Change cache and batch policies"),
            ("view_all_statistics", "Read the statistics of every masterplan and the global totals"),
        ]

    def __str__(self) -> str:
        return "mgecache permissions"


class PipelineAPIKey(AbstractAPIKey):
    """A named, hashed (SHA-512, never stored in clear), revocable key that acts as its user.

    The key's permissions are its user's (through the user's groups: pipeline, operator,
    admin). ``restricted`` keys may only touch the listed masterplans and never the global
    scope; the flag is explicit so that deleting every listed masterplan narrows a key
    to nothing instead of widening it to everything.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="The key acts as this user, with this user's role (groups and permissions).",
    )
    restricted = models.BooleanField(
        default=False,
        help_text="Only the masterplans below (and never the global scope). Off: every masterplan the role allows.",
    )
    masterplans = models.ManyToManyField(
        "cache_app.Masterplan",
        blank=True,
        related_name="api_keys",
        help_text="The masterplans a restricted key may use.",
    )
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Stamped on use (at most once a minute)."
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def allowed_masterplans(self) -> frozenset[str] | None:
        """None when unrestricted, else the canonical UUID strings the key may use."""
        if not self.restricted:
            return None
        return frozenset(str(pk) for pk in self.masterplans.values_list("pk", flat=True))


@receiver([post_save, post_delete], sender="cache_app.ModelPricing")
def _model_catalog_changed(sender: Any, **kwargs: Any) -> None:
    """Known models and their output bounds change with ModelPricing: reload them here at once."""
    from cache_app.access.limits import get_model_catalog

    catalog = get_model_catalog()
    catalog.invalidate()
    transaction.on_commit(catalog.invalidate)
