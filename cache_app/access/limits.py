"""Input bounds: the model catalog (known models, their maximum output) and the model check.

Text limits are ``MGECACHE`` settings (defaults in ``cache_app.core.conf``), read by the API's
fields (``cache_app.serializers.fields``) when a serializer is built, so a change applies to the
next request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from rest_framework import serializers

from cache_app.core import conf
from cache_app.core.dbread import RefreshingSnapshot
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)


def _load_models() -> dict[str, int]:
    from cache_app.models import ModelPricing

    return dict(ModelPricing.objects.values_list("model", "max_output_tokens"))


class ModelCatalog:
    """The models callers may name (``ModelPricing`` rows) and their maximum output, from memory.

    Reloaded at most every ``POLICY_REFRESH_SECONDS``, and at once in this process after a
    ``ModelPricing`` change (see ``cache_app.signals``).
    """

    def __init__(
        self,
        *,
        refresh_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[], Mapping[str, int]] = _load_models,
    ) -> None:
        self._refresh = refresh_seconds
        self._snapshot: RefreshingSnapshot[Mapping[str, int]] = RefreshingSnapshot(
            lambda: dict(loader()),
            initial={},
            refresh_seconds=lambda: float(
                conf.get("POLICY_REFRESH_SECONDS") if self._refresh is None else self._refresh
            ),
            clock=clock,
            what="ModelPricing (model catalog)",
            log=logger,
        )

    def invalidate(self) -> None:
        self._snapshot.invalidate()

    def max_output_tokens(self, model: str) -> int | None:
        """The model's maximum output in tokens, or None when the model is unknown."""
        return self._snapshot.get().get(model)

    def known(self) -> list[str]:
        return sorted(self._snapshot.get())


@process_wide
def get_model_catalog() -> ModelCatalog:
    return ModelCatalog()


def max_tokens_error(model: str, max_tokens: int | None) -> str | None:
    """Why ``max_tokens`` is refused for ``model`` (it exceeds the model's maximum output), or None.

    The limit is the model's ``max_output_tokens`` (ModelPricing): the provider would refuse a
    larger request, and a silent cap would cache the answer under a request nobody sent.
    """
    limit = get_model_catalog().max_output_tokens(model)
    if max_tokens is None or limit is None or max_tokens <= limit:
        return None
    return f"Ensure this value is less than or equal to {limit}, the maximum output of model {model[:100]!r}."


def max_output_tokens_by_model() -> dict[str, int]:
    """Each known model's maximum output (the schema publishes it next to ``max_tokens``)."""
    catalog = get_model_catalog()
    return {model: limit for model in catalog.known() if (limit := catalog.max_output_tokens(model)) is not None}


def resolve_model(model: str | None, max_tokens: int | None) -> str:
    """The model to call: the default model when None; its ``max_tokens`` within the model's maximum output.

    An unknown model is a ValidationError listing the known ones (the API's schema lists them, so it
    only happens when a ModelPricing row is removed between reading the schema and sending the
    request); ``max_tokens`` above the model's maximum output is a ValidationError naming the limit.
    """
    chosen = model or str(conf.get("LLM_DEFAULT_MODEL"))
    catalog = get_model_catalog()
    if catalog.max_output_tokens(chosen) is None:
        known = ", ".join(catalog.known()) or "none (add ModelPricing rows in the admin)"
        raise serializers.ValidationError({"model": [f"Unknown model {chosen[:100]!r}. Known models: {known}."]})
    error = max_tokens_error(chosen, max_tokens)
    if error:
        raise serializers.ValidationError({"max_tokens": [error]})
    return chosen
