"""Policies in the console: help texts say what each knob trades; an admin edit reaches every process within 5 s."""

import pytest
from django.urls import reverse

from cache_app.checks import check_mgecache_settings
from cache_app.core import conf
from cache_app.core.policies import DatabasePolicySource
from cache_app.models import BatchPolicy, CachePolicy

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        (CachePolicy, "ttl_seconds", ("lower TTL gives fresher answers and a lower hit rate",)),
        (CachePolicy, "similarity_threshold", ("lower threshold", "more similar hits")),
        (CachePolicy, "enabled", ("full cost",)),
        (CachePolicy, "cache_nonzero_temperature", ("more hits",)),
        (CachePolicy, "cache_truncated", ("incomplete answer",)),
        (BatchPolicy, "max_batch_size", ("fewer upstream calls",)),
        (BatchPolicy, "batch_window_ms", ("fewer calls", "latency")),
    ],
)
def test_help_texts_say_what_each_knob_trades(model, field, words):
    help_text = str(model._meta.get_field(field).help_text)
    for phrase in words:
        assert phrase in help_text


def test_the_change_form_shows_the_help_texts(operator_client):
    rag = CachePolicy.objects.get(layer="rag")
    html = operator_client.get(reverse("admin:cache_app_cachepolicy_change", args=[rag.pk])).content.decode()
    assert "fresher answers and a lower hit rate" in html


def _form(policy: CachePolicy, **changes) -> dict:
    data = {
        "layer": policy.layer,
        "enabled": "on" if policy.enabled else "",
        "ttl_seconds": policy.ttl_seconds,
        "notes": policy.notes,
        "similarity_threshold": policy.similarity_threshold,
        "cache_nonzero_temperature": "on" if policy.cache_nonzero_temperature else "",
        "cache_truncated": "on" if policy.cache_truncated else "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


def test_an_admin_edit_reaches_another_process_within_5_seconds(operator_client, clock):
    # Another process: its own PolicySource (no signal reaches it), on a clock the test moves.
    other = DatabasePolicySource(clock=clock)
    assert other.rag().ttl_seconds == 3600
    rag = CachePolicy.objects.get(layer="rag")
    url = reverse("admin:cache_app_cachepolicy_change", args=[rag.pk])
    response = operator_client.post(url, _form(rag, ttl_seconds=7200))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert other.rag().ttl_seconds == 3600  # still serving what it read
    clock.advance(float(conf.get("POLICY_REFRESH_SECONDS")))
    assert other.rag().ttl_seconds == 7200
    assert float(conf.get("POLICY_REFRESH_SECONDS")) <= 5.0


def test_a_refresh_interval_beyond_5_seconds_is_refused(settings):
    settings.MGECACHE = {**settings.MGECACHE, "POLICY_REFRESH_SECONDS": 5.5}
    assert "cache_app.E004" in {error.id for error in check_mgecache_settings()}


def test_an_out_of_range_edit_is_a_form_error(operator_client):
    rag = CachePolicy.objects.get(layer="rag")
    url = reverse("admin:cache_app_cachepolicy_change", args=[rag.pk])
    response = operator_client.post(url, _form(rag, similarity_threshold=1.5))
    assert response.status_code == 200
    assert "similarity_threshold" in response.context["adminform"].form.errors
    assert CachePolicy.objects.get(layer="rag").similarity_threshold == 0.95


def test_tuning_needs_a_permission(viewer_client):
    rag = CachePolicy.objects.get(layer="rag")
    url = reverse("admin:cache_app_cachepolicy_change", args=[rag.pk])
    assert viewer_client.post(url, _form(rag, ttl_seconds=60)).status_code == 403
    assert CachePolicy.objects.get(layer="rag").ttl_seconds == 3600


@pytest.mark.parametrize(
    "override",
    [
        {"CONSOLE_SNAPSHOT_RETENTION_DAYS": 0},
        {"CONSOLE_SNAPSHOT_RETENTION_DAYS": "14"},
        {"CONSOLE_TOP_MASTERPLANS": 500},
        {"CONSOLE_CENSUS_MAX_KEYS": 10},
    ],
)
def test_console_settings_are_checked(settings, override):
    from cache_app.checks import check_console_settings

    settings.MGECACHE = {**settings.MGECACHE, **override}
    assert [error.id for error in check_console_settings()] == ["cache_app.E080"]


def test_console_defaults_pass():
    from cache_app.checks import check_console_settings

    assert check_console_settings() == []
