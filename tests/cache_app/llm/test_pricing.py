"""Pricing from ModelPricing, and the durable savings ledger."""

from __future__ import annotations

import json
import logging
import uuid
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from cache_app.core.counters import DurableCounters
from cache_app.llm import pricing
from cache_app.llm.pricing import Price, PriceTable, SavingsLedger
from cache_app.models import ModelPricing
from tests.conftest import run_python


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def static_table(prices: dict[str, tuple[str, str]]) -> PriceTable:
    return PriceTable(
        refresh_seconds=3600, loader=lambda: {m: Price(Decimal(i), Decimal(o)) for m, (i, o) in prices.items()}
    )


@pytest.mark.django_db
def test_seeded_prices_give_exact_costs():
    # claude-3-5-sonnet is seeded at $3 / $15 per million tokens.
    assert pricing.cost_usd("claude-3-5-sonnet", 1000, 500) == pytest.approx(0.003 + 0.0075)
    assert pricing.cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert pricing.cost_usd("claude-3-5-sonnet", 0, 0) == 0.0


def test_dated_variants_use_their_base_price():
    table = static_table({"gpt-4o": ("2.50", "10.00"), "gpt-4o-mini": ("0.15", "0.60")})
    assert table.cost_usd("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert table.cost_usd("gpt-4o-2024-08-06", 1_000_000, 0) == pytest.approx(2.50)
    assert table.cost_usd("gpt-4o-latest", 0, 1_000_000) == pytest.approx(10.0)
    assert table.price("gpt-4o-audio-preview") is None  # another model, not a snapshot


def test_unknown_model_prices_at_zero_and_counts_a_warning(caplog, monkeypatch):
    # A real Celery worker started earlier in the run reconfigures logging and may disable
    # existing loggers; this test is about our log line, not theirs.
    monkeypatch.setattr(logging.getLogger("cache_app.llm.pricing"), "disabled", False)
    table = static_table({"known": ("1", "1")})
    before = sample("mgecache_pricing_unknown_model_total", model="other")
    with caplog.at_level(logging.WARNING, logger="cache_app.llm.pricing"):
        assert table.cost_usd("mystery-model", 1000, 1000) == 0.0
        assert table.cost_usd("mystery-model", 5, 5) == 0.0
    assert sample("mgecache_pricing_unknown_model_total", model="other") == before + 2
    assert sum("mystery-model" in r.getMessage() for r in caplog.records) == 1  # logged once per process


def test_negative_tokens_are_refused():
    with pytest.raises(ValueError, match="negative"):
        static_table({"m": ("1", "1")}).cost_usd("m", -1, 0)


@pytest.mark.django_db
def test_price_edits_are_seen_after_the_refresh_interval(clock, django_capture_on_commit_callbacks):
    table = PriceTable(refresh_seconds=2.0, clock=clock)
    assert table.cost_usd("gpt-4.1", 1_000_000, 0) == pytest.approx(2.0)
    ModelPricing.objects.filter(model="gpt-4.1").update(input_usd_per_mtok=Decimal("4.00"))
    clock.advance(1.0)
    assert table.cost_usd("gpt-4.1", 1_000_000, 0) == pytest.approx(2.0)  # still the cached price
    clock.advance(1.5)
    assert table.cost_usd("gpt-4.1", 1_000_000, 0) == pytest.approx(4.0)


@pytest.mark.django_db
def test_a_save_in_this_process_takes_effect_at_once(django_capture_on_commit_callbacks):
    assert pricing.cost_usd("brand-new-model", 1_000_000, 0) == 0.0
    with django_capture_on_commit_callbacks(execute=True):
        ModelPricing.objects.create(
            model="brand-new-model", input_usd_per_mtok=Decimal("7"), output_usd_per_mtok=Decimal("9")
        )
    assert pricing.cost_usd("brand-new-model", 1_000_000, 1_000_000) == pytest.approx(16.0)


@pytest.mark.django_db
async def test_prices_can_be_read_inside_an_event_loop():
    # The ORM refuses to run in a loop; the table reads through the ORM thread (its own
    # connection, which sees the committed seed rows).
    assert pricing.cost_usd("claude-haiku-4-5", 1_000_000, 1_000_000) == pytest.approx(6.0)


def test_database_failure_keeps_the_last_known_prices(clock):
    calls = {"n": 0}

    def loader():
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database is down")
        return {"m": Price(Decimal("1"), Decimal("2"))}

    table = PriceTable(refresh_seconds=1, clock=clock, loader=loader)
    assert table.cost_usd("m", 1_000_000, 0) == pytest.approx(1.0)
    clock.advance(5)
    assert table.cost_usd("m", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert calls["n"] == 2


# --- ledger ------------------------------------------------------------------------------------


def test_ledger_totals_by_model_layer_and_masterplan(redis):
    counters = DurableCounters(redis, flush_seconds=60)
    ledger = SavingsLedger(counters=counters, prices=static_table({"m1": ("1", "2"), "m2": ("10", "20")}))
    mp = uuid.uuid4()
    spend_before = sample("mgecache_llm_spend_usd_total", model="m1")
    saved_before = sample("mgecache_cost_saved_usd_total", cache_layer="llm")

    assert ledger.record_spend("m1", 1_000_000, 500_000, masterplan_id=mp) == pytest.approx(2.0)
    assert ledger.record_spend("m2", 100_000, 0) == pytest.approx(1.0)
    assert ledger.record_saving("llm", "m1", 1_000_000, 1_000_000, masterplan_id=mp) == pytest.approx(3.0)
    ledger.add_saving("rag", 0.5, masterplan_id=mp)

    totals = ledger.totals()
    assert totals.spent_usd == pytest.approx(3.0)
    assert totals.saved_usd == pytest.approx(3.5)
    assert totals.spent_by_model == {"m1": pytest.approx(2.0), "m2": pytest.approx(1.0)}
    assert totals.saved_by_layer == {"llm": pytest.approx(3.0), "rag": pytest.approx(0.5)}
    assert (totals.provider_calls, totals.priced_hits) == (2, 2)
    assert totals.cost_reduction == pytest.approx(3.5 / 6.5)

    per_mp = ledger.totals(masterplan_id=mp)
    assert (per_mp.spent_usd, per_mp.saved_usd) == (pytest.approx(2.0), pytest.approx(3.5))
    assert per_mp.cost_reduction == pytest.approx(3.5 / 5.5)
    assert ledger.totals(masterplan_id=uuid.uuid4()).cost_reduction == 0.0  # nothing recorded: no division by 0

    assert sample("mgecache_llm_spend_usd_total", model="m1") == pytest.approx(spend_before + 2.0)
    assert sample("mgecache_cost_saved_usd_total", cache_layer="llm") == pytest.approx(saved_before + 3.0)
    # Durable: a fresh counters object (another process, in effect) reads the same totals.
    again = SavingsLedger(counters=DurableCounters(redis)).totals()
    assert again.as_dict() == totals.as_dict()


def test_ledger_refuses_nonsense_amounts(redis):
    ledger = SavingsLedger(counters=DurableCounters(redis))
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            ledger.add_spend("m", bad)
    assert ledger.totals().spent_usd == 0.0


def test_unknown_model_spend_is_zero_but_counted_as_a_call(redis):
    ledger = SavingsLedger(counters=DurableCounters(redis), prices=static_table({}))
    assert ledger.record_spend("nobody-prices-this", 1000, 1000) == 0.0
    totals = ledger.totals()
    assert totals.spent_usd == 0.0
    assert totals.provider_calls == 1


@pytest.mark.redis_server
def test_ledger_sums_across_processes(redis, subprocess_env):
    mp = str(uuid.uuid4())
    child = (
        "from cache_app.llm.pricing import get_ledger\n"
        "from cache_app.core.counters import get_counters\n"
        "ledger = get_ledger()\n"
        f"ledger.add_spend('claude-3-5-sonnet', 0.25, masterplan_id={mp!r})\n"
        f"ledger.add_saving('llm', 0.75, masterplan_id={mp!r})\n"
        "ledger.add_saving('rag', 0.125)\n"
        "get_counters().flush()\n"
        "print('ok')\n"
    )
    for _ in range(2):
        assert run_python(child, subprocess_env).stdout.strip() == "ok"
    totals = SavingsLedger(counters=DurableCounters(redis)).totals()
    assert totals.spent_usd == pytest.approx(0.5)
    assert totals.saved_usd == pytest.approx(1.75)
    assert totals.saved_by_layer == {"llm": pytest.approx(1.5), "rag": pytest.approx(0.25)}
    per_mp = SavingsLedger(counters=DurableCounters(redis)).totals(masterplan_id=mp)
    assert json.loads(json.dumps(per_mp.as_dict()))["saved_usd"] == pytest.approx(1.5)
    assert per_mp.cost_reduction == pytest.approx(1.5 / 2.0)
