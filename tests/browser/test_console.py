"""The operator console in a real browser, against a live server: an operator's day, and what a viewer may not do."""

from __future__ import annotations

import datetime as dt
import math
import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from cache_app.console.census import LiveEntryCensus
from cache_app.core import keys
from cache_app.core.counters import get_counters
from cache_app.core.policies import DatabasePolicySource
from cache_app.core.redis_client import get_redis
from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.pricing import get_ledger
from cache_app.models import CachePolicy, Masterplan, StatsSnapshot
from cache_app.rag.cache import RAGQueryCache
from tests.cache_app.console.conftest import OPERATOR_PERMISSIONS, VEC, VIEWER_PERMISSIONS, fill, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.browser]

PLAN = uuid.UUID("5d1c7a34-8f0e-4b6a-9c2d-3e4f5a6b7c8d")
OTHERS = {
    uuid.UUID("1a2b3c4d-0000-4000-8000-000000000001"): "payments-api migration",
    uuid.UUID("1a2b3c4d-0000-4000-8000-000000000002"): "search indexer rewrite",
    uuid.UUID("1a2b3c4d-0000-4000-8000-000000000003"): "mobile onboarding flow",
}
INVALIDATIONS = ("Invalidate LLM cache", "Invalidate RAG cache", "Invalidate all caches")


def _history(minutes: int = 24 * 60) -> dict[str, float]:
    """Minute snapshots of a plausible day so far (running totals); returns the last row's totals."""
    start, rows, totals = timezone.now() - dt.timedelta(minutes=minutes), [], {}
    hits = misses = exact = similar = rag_misses = saved = spent = batches = requests = errors = 0.0
    sizes: dict[str, int] = {}
    for minute in range(minutes):
        load = 20 + 15 * math.sin(minute / 45)  # requests per minute
        rate = 0.55 + 0.25 * (minute / minutes)  # the hit rate climbs as the caches warm
        hits, misses = hits + load * rate, misses + load * (1 - rate)
        exact, similar, rag_misses = exact + load * 0.3, similar + load * 0.12, rag_misses + load * 0.35
        saved, spent = saved + load * rate * 0.004, spent + load * (1 - rate) * 0.004
        size = str(1 + minute % 5)
        sizes[size] = sizes.get(size, 0) + 2
        batches, requests = batches + 2, requests + 2 * int(size)
        errors += 3 if 900 <= minute < 904 else 0  # a short Redis hiccup
        totals = {"llm_hits": hits, "llm_misses": misses, "saved_usd": saved, "spent_usd": spent}
        rows.append(
            StatsSnapshot(
                taken_at=start + dt.timedelta(minutes=minute),
                llm_hits=int(hits),
                llm_misses=int(misses),
                rag_exact_hits=int(exact),
                rag_similar_hits=int(similar),
                rag_misses=int(rag_misses),
                saved_usd=saved,
                spent_usd=spent,
                batches=int(batches),
                batched_requests=int(requests),
                batch_sizes=dict(sizes),
                redis_errors=int(errors),
                breaker_skips=int(errors * 4),
                fail_open={"failed:llm:get": int(errors), "skipped:llm:get": int(errors * 4)},
                similarity_scores={
                    "le:0.8": minute,
                    "le:0.9": minute * 2,
                    "le:0.93": minute * 2,
                    "le:0.95": minute,
                    "le:0.97": minute * 3,
                    "le:0.99": minute * 2,
                    "le:1": minute,
                },
                top_masterplans=[
                    [str(PLAN), round(saved * 0.5, 4)],
                    *[[str(mp), round(saved * share, 4)] for mp, share in zip(OTHERS, (0.25, 0.15, 0.1), strict=True)],
                ],
                live_entries={"llm": 1200, "rag": 300, "complete": True},
                llm_provider="simulated",
            )
        )
    StatsSnapshot.objects.bulk_create(rows, batch_size=1000)
    return totals


def _counters_match(totals: dict[str, float]) -> None:
    """Bring the durable counters to the history's last totals, so the home page and the dashboard agree."""
    counters = get_counters()
    counters.incr("llm", "hits", int(totals["llm_hits"]), masterplan_id=PLAN)
    counters.incr("llm", "misses", int(totals["llm_misses"]), masterplan_id=PLAN)
    counters.incr("rag", "hits", 900)
    counters.incr("rag", "similar_hits", 360)
    counters.incr("rag", "misses", 1050)
    get_ledger().add_saving("llm", totals["saved_usd"], masterplan_id=PLAN)
    get_ledger().add_spend("claude-3-5-sonnet", totals["spent_usd"], masterplan_id=PLAN)
    counters.flush()


@pytest.fixture
def console_data(seeded_defaults, django_user_model):
    operator = make_user(django_user_model, "operator", OPERATOR_PERMISSIONS)
    viewer = make_user(django_user_model, "viewer", VIEWER_PERMISSIONS)
    Masterplan.objects.create(id=PLAN, name="checkout-service refactor", status="running")
    for mp, name in OTHERS.items():
        Masterplan.objects.create(id=mp, name=name, status="completed")
    fill(PLAN, llm=3, rag=2)
    fill(next(iter(OTHERS)), llm=1, rag=1)
    _counters_match(_history())
    census = LiveEntryCensus()
    census.store(census.run())
    return operator, viewer


def _login(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def test_operator_console_end_to_end(browser, live_server, console_data, artifacts):
    base = live_server.url
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)

    # 1. An operator logs in.
    _login(page, base, "operator")

    # 2. The home page shows the figures above the model list.
    summary = page.locator("#console-summary")
    assert summary.is_visible()
    assert page.locator("[data-figure=llm-hit-rate]").inner_text().endswith("%")
    assert page.locator("[data-figure=provider]").inner_text().startswith("simulated")
    assert page.locator("[data-health=redis]").get_attribute("data-ok") == "true"
    assert page.locator("#console-dashboard-link").is_visible()
    page.screenshot(path=artifacts / "console-home.png", full_page=True)

    # 3. The RAG TTL is changed, and new entries get it.
    rag = CachePolicy.objects.get(layer="rag")
    page.goto(base + reverse("admin:cache_app_cachepolicy_change", args=[rag.pk]))
    assert "fresher answers and a lower hit rate" in page.content()
    page.screenshot(path=artifacts / "console-policy.png", full_page=True)
    page.fill("#id_ttl_seconds", "7200")
    page.click("input[name=_save]")
    assert "was changed successfully" in page.locator("ul.messagelist").inner_text()
    assert DatabasePolicySource(refresh_seconds=0).rag().ttl_seconds == 7200
    RAGQueryCache().set("after the change", VEC, [{"content": "d"}], embedding_model="m", top_k=3)
    digest = keys.rag_entry_digest("after the change", "m", 3)
    assert 3600 < get_redis().ttl(keys.rag_entry(None, digest)) <= 7200

    # 4. "Invalidate all caches" on a masterplan with entries, through the confirmation page.
    page.goto(base + reverse("admin:cache_app_masterplan_changelist"))
    row = page.locator("tr", has=page.locator(f"input.action-select[value='{PLAN}']"))
    assert row.locator("td.field-llm_entries").inner_text() == "3"
    assert row.locator("td.field-rag_entries").inner_text() == "2"
    page.screenshot(path=artifacts / "console-masterplans.png", full_page=True)
    page.check(f"input.action-select[value='{PLAN}']")
    page.select_option("select[name=action]", "invalidate_all_caches")
    page.click("button[name=index]")
    assert "3 LLM entries and 2 RAG entries" in page.locator("#removal-summary").inner_text()
    page.screenshot(path=artifacts / "console-invalidate-confirmation.png", full_page=True)
    page.click("#confirm-invalidate")
    message = page.locator("ul.messagelist li.success").inner_text()
    assert "Invalidating the LLM and RAG caches of 1 masterplan(s): checkout-service refactor" in message
    assert LLMPromptCache().get("write parser 0", "claude-3-5-sonnet", 0.0, masterplan_id=PLAN) is None

    # 5. The audit row: linked from the message, and listed in the invalidations admin.
    page.click("ul.messagelist li.success a")
    detail = page.locator("#content-main").inner_text()
    assert "operator" in detail
    assert str(PLAN) in detail
    assert "Succeeded" in detail
    page.goto(base + reverse("admin:cache_app_invalidationaudit_changelist"))
    audit_row = page.locator("#result_list tbody tr").first
    assert "operator" in audit_row.inner_text()
    assert "Succeeded" in audit_row.inner_text()
    page.screenshot(path=artifacts / "console-audit.png", full_page=True)

    # 6. The dashboard, with snapshot data: every chart rendered as SVG.
    page.goto(base + "/admin/")
    page.click("#console-dashboard-link")
    page.wait_for_selector("svg.console-chart")
    assert page.locator("#console-empty").count() == 0
    assert page.locator("svg.console-chart").count() == 6
    assert page.locator("svg.console-chart[data-kind=line] polyline").count() >= 4
    assert page.locator("svg.console-chart[data-kind=bar] rect").count() >= 5
    assert "checkout-service refactor" in page.locator("svg.console-chart[data-kind=hbar]").first.inner_html()
    page.screenshot(path=artifacts / "console-dashboard.png", full_page=True)
    page.click("text=Last 7 days")
    assert page.locator("svg.console-chart").count() == 6
    context.close()

    # 7. A user without the invalidate permission is not offered the actions.
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    _login(page, base, "viewer")
    page.goto(base + reverse("admin:cache_app_masterplan_changelist"))
    assert page.locator("#result_list").is_visible()
    options = page.locator("select[name=action] option").all_inner_texts()
    assert not set(options) & set(INVALIDATIONS)
    for label in INVALIDATIONS:
        assert label not in page.content()
    page.screenshot(path=artifacts / "console-viewer-masterplans.png", full_page=True)
    context.close()
