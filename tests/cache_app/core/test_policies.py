import pytest
from django.core.exceptions import ValidationError

from cache_app.core.policies import DatabasePolicySource
from cache_app.models import BatchPolicy, CachePolicy

pytestmark = pytest.mark.django_db


def test_seeded_defaults(policy_source):
    assert policy_source.llm().ttl_seconds == 86400
    assert policy_source.rag().ttl_seconds == 3600
    assert policy_source.rag().similarity_threshold == 0.95
    batch = policy_source.batch()
    assert (batch.enabled, batch.max_batch_size, batch.batch_window_ms) == (True, 5, 500)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttl_seconds", 0),
        ("ttl_seconds", 30 * 24 * 3600 + 1),
        ("similarity_threshold", 0.49),
        ("similarity_threshold", 1.01),
    ],
)
def test_cache_policy_rejects_out_of_range(field, value):
    policy = CachePolicy.objects.get(layer="rag")
    setattr(policy, field, value)
    with pytest.raises(ValidationError) as exc:
        policy.save()
    assert field in exc.value.message_dict


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_batch_size", 0), ("max_batch_size", 51), ("batch_window_ms", 0), ("batch_window_ms", 10001)],
)
def test_batch_policy_rejects_out_of_range(field, value):
    policy = BatchPolicy.objects.get(pk=1)
    setattr(policy, field, value)
    with pytest.raises(ValidationError) as exc:
        policy.save()
    assert field in exc.value.message_dict


def test_cached_until_refresh_then_reloaded(clock):
    source = DatabasePolicySource(refresh_seconds=2.0, clock=clock)
    assert source.llm().ttl_seconds == 86400
    CachePolicy.objects.filter(layer="llm").update(ttl_seconds=60)  # bypasses signals, like another process
    assert source.llm().ttl_seconds == 86400  # still within the refresh window
    clock.advance(2.0)
    assert source.llm().ttl_seconds == 60


# The child's clock is a number the parent moves, so the refresh bound is checked without waiting.
CHILD_WATCHES_POLICY = """
import sys
from cache_app.core.policies import DatabasePolicySource
now = [1000.0]
source = DatabasePolicySource(clock=lambda: now[0])
assert source.llm().ttl_seconds == 86400
print("ready", flush=True)
sys.stdin.readline()  # the parent has committed the edit
held = source.llm().ttl_seconds
now[0] = 1000.0 + source.refresh_seconds * 0.999
still = source.llm().ttl_seconds
now[0] = 1000.0 + source.refresh_seconds
print(held, still, source.llm().ttl_seconds, source.refresh_seconds, flush=True)
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_policy_edit_reaches_another_process_within_the_refresh_bound(subprocess_env):
    import subprocess
    import sys

    from tests.conftest import ROOT

    child = subprocess.Popen(
        [sys.executable, "-c", "import django; django.setup()\n" + CHILD_WATCHES_POLICY],
        env=subprocess_env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        # get_or_create: an earlier transactional test's flush may have removed the seeded row.
        policy, _ = CachePolicy.objects.get_or_create(layer="llm", defaults={"ttl_seconds": 86400})
        policy.ttl_seconds = 120
        policy.save()
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert out, err
    held, still, seen, refresh = out.split()
    # Served from memory until the bound (so reads stay cheap), read from Postgres at it.
    assert (held, still, seen) == ("86400", "86400", "120")
    assert float(refresh) <= 5.0  # the documented bound an operator relies on
