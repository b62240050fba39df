"""Dollars: what each LLM call cost, what each cache hit saved, and the running totals.

* :class:`PriceTable` reads ``ModelPricing`` rows and serves them from memory for at most
  ``POLICY_REFRESH_SECONDS`` (an admin price edit reaches every process within that bound;
  in this process at once, see ``cache_app.signals``). It works inside an event loop too.
  A model is priced by its exact row, else by the row it is a dated or ``-latest`` variant
  of (``claude-3-5-sonnet-20241022`` -> ``claude-3-5-sonnet``). An unknown model prices at
  0.0 and counts ``mgecache_pricing_unknown_model_total{model="other"}``: it never raises.
  Metric labels and spend fields only carry priced model names (:meth:`PriceTable.label`),
  so a caller's model names cannot grow them without bound.
* :class:`SavingsLedger` accumulates spend (per model) and savings (per cache layer),
  globally and per masterplan, in the durable cross-process counters (Redis hash
  ``stats:cost``, see ``cache_app.core.keys``), and exports ``mgecache_llm_spend_usd_total{model}``
  and ``mgecache_cost_saved_usd_total{cache_layer}``. Cost reduction is
  ``saved / (saved + spent)``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cache_app.core import conf, metrics
from cache_app.core.counters import DurableCounters, get_counters
from cache_app.core.dbread import RefreshingSnapshot
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)

MTOK = Decimal(1_000_000)
# Suffixes that name a snapshot of a priced model rather than another model.
_VARIANT_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")
OTHER_MODEL = "other"  # the metric label (and spend field) of any model with no ModelPricing row
_MAX_WARNED = 100  # distinct unknown model names warned about, per process


@dataclass(frozen=True)
class Price:
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (
            Decimal(prompt_tokens) * self.input_usd_per_mtok + Decimal(completion_tokens) * self.output_usd_per_mtok
        ) / MTOK


def _load_prices() -> dict[str, Price]:
    from cache_app.models import ModelPricing

    return {
        row.model: Price(row.input_usd_per_mtok, row.output_usd_per_mtok)
        for row in ModelPricing.objects.only("model", "input_usd_per_mtok", "output_usd_per_mtok")
    }


class PriceTable:
    """ModelPricing, cached per process with a short refresh. ``clock``/``loader`` are injectable."""

    def __init__(
        self,
        *,
        refresh_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[], Mapping[str, Price]] = _load_prices,
    ) -> None:
        self._refresh = refresh_seconds
        self._snapshot: RefreshingSnapshot[Mapping[str, Price]] = RefreshingSnapshot(
            lambda: dict(loader()),
            initial={},
            refresh_seconds=lambda: self.refresh_seconds,
            clock=clock,
            what="ModelPricing",
            log=logger,
        )
        self._warned: set[str] = set()

    @property
    def refresh_seconds(self) -> float:
        return float(conf.get("POLICY_REFRESH_SECONDS") if self._refresh is None else self._refresh)

    def invalidate(self) -> None:
        self._snapshot.invalidate()

    def price(self, model: str) -> Price | None:
        """The price row for ``model`` (exact, else the model it is a dated variant of), or None."""
        prices = self._snapshot.get()
        found = prices.get(model)
        if found is None and _VARIANT_SUFFIX.search(model or ""):
            found = prices.get(_VARIANT_SUFFIX.sub("", model))
        return found

    def label(self, model: str) -> str:
        """A bounded metric label: the priced model's name (a dated variant's base), else "other"."""
        prices = self._snapshot.get()
        if model in prices:
            return model
        if _VARIANT_SUFFIX.search(model or "") and _VARIANT_SUFFIX.sub("", model) in prices:
            return _VARIANT_SUFFIX.sub("", model)
        return OTHER_MODEL

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for these tokens of ``model``; 0.0 (and a warning counter) for an unknown model."""
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts cannot be negative")
        price = self.price(model)
        if price is None:
            metrics.PRICING_UNKNOWN_MODEL.labels(OTHER_MODEL).inc()
            name = str(model)[:100]
            if name not in self._warned and len(self._warned) < _MAX_WARNED:
                self._warned.add(name)
                logger.warning("No ModelPricing row for model %r: its calls are priced at $0", name)
            return 0.0
        return float(price.cost(prompt_tokens, completion_tokens))


@process_wide
def get_price_table() -> PriceTable:
    """The process-wide price table (one in-memory copy of ModelPricing)."""
    return PriceTable()


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Shortcut for ``get_price_table().cost_usd(...)``."""
    return get_price_table().cost_usd(model, prompt_tokens, completion_tokens)


# --- the ledger ---------------------------------------------------------------------------------

COST_LAYER = "cost"  # the stats hash: P stats:cost and P stats:cost:<masterplan>
SPENT = "spent_usd"
SAVED = "saved_usd"
CALLS = "provider_calls"
HITS = "priced_hits"
_SPENT_MODEL = "spent_usd:model:"
_SAVED_LAYER = "saved_usd:layer:"


@dataclass(frozen=True)
class CostTotals:
    spent_usd: float = 0.0
    saved_usd: float = 0.0
    provider_calls: int = 0
    priced_hits: int = 0
    spent_by_model: dict[str, float] = field(default_factory=dict)
    saved_by_layer: dict[str, float] = field(default_factory=dict)

    @property
    def cost_reduction(self) -> float:
        """saved / (saved + spent): the share of the would-be bill the caches avoided."""
        total = self.saved_usd + self.spent_usd
        return self.saved_usd / total if total > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "spent_usd": self.spent_usd,
            "saved_usd": self.saved_usd,
            "cost_reduction": self.cost_reduction,
            "provider_calls": self.provider_calls,
            "priced_hits": self.priced_hits,
            "spent_by_model": dict(self.spent_by_model),
            "saved_by_layer": dict(self.saved_by_layer),
        }


def _check_amount(usd: float) -> float:
    usd = float(usd)
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"a dollar amount must be finite and >= 0, got {usd!r}")
    return usd


class SavingsLedger:
    """Records spend and savings durably (cross-process) and in Prometheus."""

    def __init__(self, *, counters: DurableCounters | None = None, prices: PriceTable | None = None) -> None:
        self._counters = counters
        self._prices = prices

    @property
    def counters(self) -> DurableCounters:
        return self._counters if self._counters is not None else get_counters()

    @property
    def prices(self) -> PriceTable:
        return self._prices if self._prices is not None else get_price_table()

    # Amounts already priced -------------------------------------------------------------
    def add_spend(self, model: str, usd: float, *, masterplan_id: Any = None) -> None:
        usd = _check_amount(usd)
        label = self.prices.label(str(model))
        c = self.counters
        c.incr(COST_LAYER, SPENT, usd, masterplan_id=masterplan_id)
        c.incr(COST_LAYER, _SPENT_MODEL + label, usd, masterplan_id=masterplan_id)
        c.incr(COST_LAYER, CALLS, 1, masterplan_id=masterplan_id)
        metrics.LLM_SPEND_USD.labels(label).inc(usd)

    def add_saving(self, cache_layer: str, usd: float, *, masterplan_id: Any = None) -> None:
        usd = _check_amount(usd)
        c = self.counters
        c.incr(COST_LAYER, SAVED, usd, masterplan_id=masterplan_id)
        c.incr(COST_LAYER, _SAVED_LAYER + cache_layer, usd, masterplan_id=masterplan_id)
        c.incr(COST_LAYER, HITS, 1, masterplan_id=masterplan_id)
        metrics.COST_SAVED_USD.labels(cache_layer).inc(usd)

    # Tokens, priced here -------------------------------------------------------------------
    def record_spend(
        self, model: str, prompt_tokens: int, completion_tokens: int, *, masterplan_id: Any = None
    ) -> float:
        """Price a provider call's tokens, record them as spend, and return the cost."""
        usd = self.prices.cost_usd(model, prompt_tokens, completion_tokens)
        self.add_spend(model, usd, masterplan_id=masterplan_id)
        return usd

    def record_saving(
        self, cache_layer: str, model: str, prompt_tokens: int, completion_tokens: int, *, masterplan_id: Any = None
    ) -> float:
        """Price a cache hit's tokens (the call it avoided), record them as saved, and return it."""
        usd = self.prices.cost_usd(model, prompt_tokens, completion_tokens)
        self.add_saving(cache_layer, usd, masterplan_id=masterplan_id)
        return usd

    def totals(self, *, masterplan_id: Any = None) -> CostTotals:
        """Totals across every process (global, or one masterplan's)."""
        raw = self.counters.read(COST_LAYER, masterplan_id=masterplan_id)
        return CostTotals(
            spent_usd=raw.get(SPENT, 0.0),
            saved_usd=raw.get(SAVED, 0.0),
            provider_calls=int(raw.get(CALLS, 0)),
            priced_hits=int(raw.get(HITS, 0)),
            spent_by_model={k.removeprefix(_SPENT_MODEL): v for k, v in raw.items() if k.startswith(_SPENT_MODEL)},
            saved_by_layer={k.removeprefix(_SAVED_LAYER): v for k, v in raw.items() if k.startswith(_SAVED_LAYER)},
        )


@process_wide
def get_ledger() -> SavingsLedger:
    """The process-wide ledger (on the default counters and price table)."""
    return SavingsLedger()
