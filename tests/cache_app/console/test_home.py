"""The admin index: the caches' state above the model list, from the statistics document."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from cache_app.console.home import home_summary
from cache_app.core.counters import get_counters
from cache_app.health import Check
from cache_app.llm.pricing import get_ledger
from cache_app.models import StatsSnapshot

pytestmark = pytest.mark.django_db


def _traffic() -> None:
    counters = get_counters()
    counters.incr("llm", "hits", 3)
    counters.incr("llm", "misses", 1)
    counters.incr("rag", "hits", 1)
    counters.incr("rag", "similar_hits", 3)
    counters.incr("rag", "misses", 4)
    get_ledger().add_saving("llm", 2.5)
    get_ledger().add_spend("claude-3-5-sonnet", 1.25)


def test_summary_figures_come_from_the_statistics_document(redis):
    _traffic()
    summary = home_summary()
    assert summary.llm_hit_rate == pytest.approx(0.75)
    assert summary.rag_hit_rate == pytest.approx(0.5)
    assert summary.similar_share == pytest.approx(0.75)
    assert (summary.saved_today, summary.spent_today) == (pytest.approx(2.5), pytest.approx(1.25))
    assert summary.today_since is None  # no snapshot from before today: counted since the counters started
    assert summary.simulated
    assert summary.provider == "simulated"
    assert [check.name for check in summary.health] == ["redis", "broker"]
    assert summary.health[0].ok


def test_today_is_the_total_minus_the_last_snapshot_before_midnight(redis):
    _traffic()
    now = timezone.now()
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    StatsSnapshot.objects.create(taken_at=midnight - dt.timedelta(hours=3), saved_usd=0.5, spent_usd=0.25)
    StatsSnapshot.objects.create(taken_at=midnight - dt.timedelta(minutes=1), saved_usd=2.0, spent_usd=1.0)
    StatsSnapshot.objects.create(taken_at=now, saved_usd=2.4, spent_usd=1.2)  # today's rows are not a baseline
    summary = home_summary(now=now)
    assert summary.saved_today == pytest.approx(0.5)
    assert summary.spent_today == pytest.approx(0.25)
    assert summary.today_since == midnight


def test_counters_lost_today_count_from_zero(redis):
    _traffic()
    now = timezone.now()
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    StatsSnapshot.objects.create(taken_at=midnight - dt.timedelta(minutes=1), saved_usd=90.0, spent_usd=40.0)
    summary = home_summary(now=now)
    assert summary.saved_today == pytest.approx(2.5)


def test_the_index_shows_the_figures_above_the_model_list(admin_client, redis):
    _traffic()
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert html.index('id="console-summary"') < html.index('class="app-cache_app')
    assert 'data-figure="llm-hit-rate">75%' in html
    assert 'data-figure="saved-today">$2.50' in html
    assert 'data-health="redis" data-ok="true"' in html
    assert "simulated" in html
    assert reverse("admin:cache_app_statssnapshot_dashboard") in html


def test_the_index_says_when_a_dependency_is_down(admin_client, monkeypatch):
    monkeypatch.setattr(
        "cache_app.console.home.check_broker", lambda timeout: Check("broker", False, "ConnectionError: refused")
    )
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert 'data-health="broker" data-ok="false"' in html
    assert "ConnectionError: refused" in html


def test_app_index_pages_keep_the_stock_layout(admin_client):
    html = admin_client.get(reverse("admin:app_list", args=["cache_app"])).content.decode()
    assert 'id="console-summary"' not in html


def test_no_dashboard_link_without_the_permission(client, django_user_model):
    user = django_user_model.objects.create_user("plain", password="x", is_staff=True)
    client.force_login(user)
    html = client.get(reverse("admin:index")).content.decode()
    assert 'id="console-summary"' in html
    assert 'id="console-dashboard-link"' not in html
