"""The masterplans changelist: figures in one round trip, and the three invalidation actions."""

import uuid

import pytest
from django.urls import reverse
from redis.connection import AbstractConnection

from cache_app.console.census import LiveEntryCensus
from cache_app.core.counters import get_counters
from cache_app.llm.cache import LLMPromptCache
from cache_app.models import InvalidationAudit, Masterplan
from cache_app.rag.cache import RAGQueryCache
from tests.cache_app.console.conftest import VEC, fill

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:cache_app_masterplan_changelist"
MP_A = uuid.UUID("aaaaaaaa-3333-4333-8333-000000000001")
MP_B = uuid.UUID("bbbbbbbb-3333-4333-8333-000000000002")


def cached(masterplan_id) -> tuple[bool, bool]:
    llm = LLMPromptCache().get("write parser 0", "claude-3-5-sonnet", 0.0, masterplan_id=masterplan_id)
    rag = RAGQueryCache().get("how to parse 0", VEC, embedding_model="m", top_k=3, masterplan_id=masterplan_id)
    return llm is not None, rag is not None


def census(redis) -> None:
    tool = LiveEntryCensus(redis)
    tool.store(tool.run())


def test_changelist_shows_each_masterplans_figures(operator_client, redis):
    Masterplan.objects.create(id=MP_A, name="plan A")
    Masterplan.objects.create(id=MP_B, name="plan B")
    fill(MP_A, llm=3, rag=2)
    cached(MP_A)  # two hits
    get_counters().flush()
    census(redis)
    response = operator_client.get(reverse(CHANGELIST))
    rows = {str(obj.pk): obj.console_figures for obj in response.context["cl"].result_list}
    assert (rows[str(MP_A)].llm_entries, rows[str(MP_A)].rag_entries) == (3, 2)
    assert rows[str(MP_A)].hit_rate == 1.0
    assert rows[str(MP_A)].last_activity is not None
    assert rows[str(MP_B)].hit_rate is None
    html = response.content.decode()
    for header in ("LLM entries", "RAG entries", "Hit rate", "Saved (USD)", "Last activity"):
        assert header in html
    assert "Live entries counted at" in html


@pytest.mark.parametrize("count", [2, 25])
def test_changelist_reads_redis_in_one_round_trip_per_page(operator_client, redis, monkeypatch, count):
    Masterplan.objects.bulk_create(Masterplan(id=uuid.uuid4(), name=f"plan {i}") for i in range(count))
    operator_client.get(reverse(CHANGELIST))  # warm up connections, counters, the breaker
    get_counters().flush()
    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    response = operator_client.get(reverse(CHANGELIST))
    assert len(response.context["cl"].result_list) == count
    assert sent[0] == 1


def test_actions_are_offered_only_with_the_invalidate_permission(operator_client, viewer_client):
    Masterplan.objects.create(id=MP_A, name="plan A")
    offered = operator_client.get(reverse(CHANGELIST)).context["action_form"].fields["action"].choices
    assert {name for name, _ in offered} >= {"invalidate_llm_cache", "invalidate_rag_cache", "invalidate_all_caches"}
    response = viewer_client.get(reverse(CHANGELIST))
    form = response.context["action_form"]
    names = set() if form is None else {name for name, _ in form.fields["action"].choices}
    assert not names & {"invalidate_llm_cache", "invalidate_rag_cache", "invalidate_all_caches"}
    # Posting the action anyway does nothing.
    fill(MP_A)
    viewer_client.post(reverse(CHANGELIST), {"action": "invalidate_all_caches", "_selected_action": [str(MP_A)]})
    viewer_client.post(
        reverse(CHANGELIST), {"action": "invalidate_all_caches", "_selected_action": [str(MP_A)], "post": "yes"}
    )
    assert cached(MP_A) == (True, True)


def test_confirmation_says_what_and_how_much_will_be_removed(operator_client):
    Masterplan.objects.create(id=MP_A, name="plan A")
    Masterplan.objects.create(id=MP_B, name="plan B")
    fill(MP_A, llm=3, rag=2)
    fill(MP_B, llm=1, rag=4)
    data = {"action": "invalidate_all_caches", "_selected_action": [str(MP_A), str(MP_B)]}
    response = operator_client.post(reverse(CHANGELIST), data)
    assert response.status_code == 200
    removal = response.context["removal"]
    assert removal.totals == {"llm": 4, "rag": 6}
    assert {row["masterplan"].pk: row["counts"] for row in removal.rows} == {MP_A: [3, 2], MP_B: [1, 4]}
    html = response.content.decode()
    assert "4 LLM entries and 6 RAG entries" in html
    assert "LLM prompt cache and RAG query cache" in html
    assert cached(MP_A) == (True, True)  # nothing happened yet


@pytest.mark.parametrize(
    ("action", "after"),
    [
        ("invalidate_llm_cache", (False, True)),
        ("invalidate_rag_cache", (True, False)),
        ("invalidate_all_caches", (False, False)),
    ],
)
def test_each_action_invalidates_its_layers_of_the_selected_masterplans_only(
    operator_client, action, after, django_capture_on_commit_callbacks
):
    Masterplan.objects.create(id=MP_A, name="plan A")
    Masterplan.objects.create(id=MP_B, name="plan B")
    fill(MP_A)
    fill(MP_B)
    data = {"action": action, "_selected_action": [str(MP_A)], "post": "yes"}
    with django_capture_on_commit_callbacks(execute=True):  # the audited operation runs after commit
        response = operator_client.post(reverse(CHANGELIST), data, follow=True)
    assert cached(MP_A) == after
    assert cached(MP_B) == (True, True)
    audit = InvalidationAudit.objects.get()
    assert (audit.masterplan_id, audit.status, audit.source) == (MP_A, "succeeded", "admin")
    messages = [str(m) for m in response.context["messages"]]
    audit_url = reverse("admin:cache_app_invalidationaudit_change", args=[audit.pk])
    assert any(
        m.startswith("Invalidating the ") and "1 masterplan(s): plan A" in m and audit_url in m for m in messages
    )


def test_invalidation_reports_an_unavailable_redis(operator_client, monkeypatch, django_capture_on_commit_callbacks):
    from cache_app import actions
    from cache_app.llm.cache import CacheUnavailableError

    def down(*args, **kwargs):
        raise CacheUnavailableError("could not invalidate the llm cache")

    monkeypatch.setattr(actions, "_invalidate_layer", down)
    Masterplan.objects.create(id=MP_A, name="plan A")
    data = {"action": "invalidate_llm_cache", "_selected_action": [str(MP_A)], "post": "yes"}
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse(CHANGELIST), data, follow=True)
    # The operation ran after the response; its audit row (linked from the message) says why it failed.
    audit = InvalidationAudit.objects.get()
    assert audit.status == "failed"
    assert "could not invalidate the llm cache" in audit.error
