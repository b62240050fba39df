"""Signal receivers: policies and prices take effect at once here; document changes drop stale RAG results."""

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from cache_app.access.authentication import get_resolved_keys
from cache_app.access.limits import get_model_catalog
from cache_app.core.policies import get_policy_source
from cache_app.models import BatchPolicy, CachePolicy, Masterplan, ModelPricing, PipelineAPIKey
from cache_app.rag import documents as document_store

logger = logging.getLogger(__name__)


@receiver([post_save, post_delete], sender=CachePolicy)
@receiver([post_save, post_delete], sender=BatchPolicy)
def _policy_changed(sender: type[Model], **kwargs: Any) -> None:
    transaction.on_commit(get_policy_source().invalidate)


@receiver([post_save, post_delete], sender=ModelPricing)
def _pricing_changed(sender: type[Model], **kwargs: Any) -> None:
    from cache_app.llm.pricing import get_price_table

    transaction.on_commit(get_price_table().invalidate)


@receiver([post_save, post_delete], sender=ModelPricing)
def _model_catalog_changed(sender: type[Model], **kwargs: Any) -> None:
    """Known models and their output bounds change with ModelPricing: reload them here at once."""
    catalog = get_model_catalog()
    catalog.invalidate()
    transaction.on_commit(catalog.invalidate)


@receiver(document_store.documents_changed)
def _documents_changed(sender: type[Model], masterplan_id: str | None = None, **kwargs: Any) -> None:
    """Cached retrievals of a scope are stale once its documents change: drop them (O(1))."""
    from cache_app.llm.cache import CacheUnavailableError
    from cache_app.rag.cache import RAGQueryCache

    try:
        RAGQueryCache().invalidate_masterplan(masterplan_id, reclaim="celery")
    except CacheUnavailableError as exc:
        # Entries then live out their TTL (1 h by default); say so once, loudly.
        logger.error("documents of scope %s changed but the RAG cache could not be invalidated: %s", masterplan_id, exc)


@receiver(post_delete, sender=Masterplan)
def _masterplan_deleted(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    """This process registers the id again if the pipeline uses it again (other processes: after LRU eviction)."""
    from cache_app.masterplans import get_registry

    get_registry().forget(instance.pk)


User = get_user_model()


@receiver([post_save, post_delete], sender=PipelineAPIKey)
@receiver([post_save, post_delete], sender=User)
@receiver(post_delete, sender=Group)
@receiver(m2m_changed, sender=PipelineAPIKey.masterplans.through)
@receiver(m2m_changed, sender=User.groups.through)
@receiver(m2m_changed, sender=User.user_permissions.through)
@receiver(m2m_changed, sender=Group.permissions.through)
def _access_changed(sender: type[Model], **kwargs: Any) -> None:
    # A revoked key, a deactivated user or a changed permission applies at once in this process
    # (other processes: within API_KEY_CACHE_SECONDS).
    resolved = get_resolved_keys()
    resolved.clear()  # now, and again at commit: a key resolved in between saw the old rows
    transaction.on_commit(resolved.clear)
