"""Keys of retired key-scheme versions: counted, deleted (SCAN + UNLINK), current keys untouched."""

import pytest
from django.core.management import CommandError, call_command

from cache_app.core import keys, retired
from cache_app.llm.cache import LLMPromptCache
from tests.conftest import StaticPolicies

pytestmark = pytest.mark.django_db


def _old_keys(redis) -> list[str]:
    base = retired.retired_prefixes()[0]
    old = [f"{base}llm:global:{'0' * 64}", f"{base}llm:gen:global", f"{base}stats:llm"]
    for key in old:
        redis.set(key, "1")
    return old


def test_reclaim_deletes_only_retired_versions(redis):
    old = _old_keys(redis)
    cache = LLMPromptCache(policies=StaticPolicies())
    cache.set("p", "m", 0.0, "kept", prompt_tokens=1, completion_tokens=1)
    assert retired.count_retired_keys(redis) == len(old)
    assert retired.reclaim_retired_keys(redis) == len(old)
    assert not any(redis.exists(key) for key in old)
    assert cache.get("p", "m", 0.0).text == "kept"
    assert retired.reclaim_retired_keys(redis) == 0


def test_command_acts_as_a_user_and_reports(redis, admin_user, capsys):
    old = _old_keys(redis)
    call_command("reclaim_retired_keys", "--dry-run", "--user", admin_user.username)
    assert f"{len(old)} retired keys" in capsys.readouterr().out
    assert all(redis.exists(key) for key in old)
    call_command("reclaim_retired_keys", "--user", admin_user.username)
    assert f"deleted {len(old)} retired keys" in capsys.readouterr().out
    assert keys.VERSION not in keys.RETIRED_VERSIONS


def test_command_refuses_without_a_user(redis, monkeypatch):
    monkeypatch.delenv("MGECACHE_CLI_USER", raising=False)
    with pytest.raises(CommandError, match="--user"):
        call_command("reclaim_retired_keys")
