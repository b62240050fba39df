"""Fixtures of the operator console tests: cache entries, traffic, and users with operator rights."""

from __future__ import annotations

import numpy as np
import pytest
import redis as redis_lib
from django.contrib.auth.models import Permission
from django.test import Client
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache_app.access.roles import OPERATOR, ROLE_PERMISSIONS
from cache_app.llm.cache import LLMPromptCache
from cache_app.rag.cache import RAGQueryCache

VEC = np.linspace(0.1, 1.0, 16, dtype=np.float32)

# Stand-in for the access-control roles: what an operator needs in the console. Once the
# roles exist as groups, these fixtures should use the "operator" group instead.
# The operator role's permissions (cache_app.access.roles), as codenames of this app.
OPERATOR_PERMISSIONS = tuple(name.split(".", 1)[1] for name in ROLE_PERMISSIONS[OPERATOR])
VIEWER_PERMISSIONS = ("view_masterplan", "view_cachepolicy", "view_statssnapshot")


def fill(masterplan_id, *, llm: int = 1, rag: int = 1) -> None:
    """``llm`` LLM entries and ``rag`` RAG entries in the masterplan's scope."""
    llm_cache, rag_cache = LLMPromptCache(), RAGQueryCache()
    for i in range(llm):
        llm_cache.set(
            f"write parser {i}",
            "claude-3-5-sonnet",
            0.0,
            f"def parse_{i}(): ...",
            prompt_tokens=100,
            completion_tokens=50,
            masterplan_id=masterplan_id,
        )
    for i in range(rag):
        vector = np.roll(VEC, i)
        rag_cache.set(
            f"how to parse {i}",
            vector,
            [{"content": f"doc {i}"}],
            embedding_model="m",
            top_k=3,
            masterplan_id=masterplan_id,
        )


def make_user(django_user_model, username: str, codenames: tuple[str, ...]):
    user = django_user_model.objects.create_user(username=username, password="pw-" + username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="cache_app", codename__in=codenames))
    return user


@pytest.fixture
def operator(django_user_model):
    return make_user(django_user_model, "operator", OPERATOR_PERMISSIONS)


@pytest.fixture
def viewer(django_user_model):
    return make_user(django_user_model, "viewer", VIEWER_PERMISSIONS)


@pytest.fixture
def operator_client(operator):
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(viewer):
    client = Client()
    client.force_login(viewer)
    return client


def dead_redis(port: int) -> redis_lib.Redis:
    """A client of a server that never answers, failing after one short timeout (no retries)."""
    return redis_lib.Redis(
        host="127.0.0.1", port=port, socket_timeout=0.05, socket_connect_timeout=0.05, retry=Retry(NoBackoff(), 0)
    )
