"""Make a policy saved in this process effective here at once (others within the refresh bound)."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import document_store  # noqa: F401  (Document change receivers)
from .models import BatchPolicy, CachePolicy, ModelPricing
from .policies import get_policy_source


@receiver([post_save, post_delete], sender=CachePolicy)
@receiver([post_save, post_delete], sender=BatchPolicy)
def _policy_changed(sender, **kwargs) -> None:
    transaction.on_commit(get_policy_source().invalidate)


@receiver([post_save, post_delete], sender=ModelPricing)
def _pricing_changed(sender, **kwargs) -> None:
    from .pricing import get_price_table

    transaction.on_commit(get_price_table().invalidate)
