"""Masterplans seen by the pipeline are registered once, memoised in a bounded LRU, failing open."""

from __future__ import annotations

import uuid

import pytest

from cache_app.core.dbread import arun_orm
from cache_app.masterplans import MasterplanRegistry, aensure_masterplan_registered, ensure_masterplan_registered
from cache_app.models import Masterplan

A, B, C = (uuid.UUID(f"{d * 8}-{d * 4}-4{d * 3}-8{d * 3}-{d * 12}") for d in "abc")


@pytest.mark.django_db
def test_first_sight_registers_a_row_named_by_its_id_then_no_query(django_assert_num_queries):
    assert ensure_masterplan_registered(str(A).upper()) is True
    assert Masterplan.objects.get(pk=A).name == str(A)
    with django_assert_num_queries(0):
        for _ in range(100):
            ensure_masterplan_registered(A)


@pytest.mark.django_db
def test_an_operators_name_is_kept():
    Masterplan.objects.create(id=A, name="billing service rewrite")
    ensure_masterplan_registered(A)
    assert Masterplan.objects.get(pk=A).name == "billing service rewrite"


@pytest.mark.django_db
def test_the_memo_is_a_bounded_lru(django_assert_num_queries):
    created: list[str] = []
    registry = MasterplanRegistry(create=created.append, max_size=2)
    for masterplan in (A, B, A, C):  # A was used again, so B is the least recently used
        registry.ensure(masterplan)
    assert created == [str(A), str(B), str(C)]
    registry.ensure(A)
    registry.ensure(B)  # evicted: registered again
    assert created == [str(A), str(B), str(C), str(B)]


def test_a_database_error_fails_open_and_is_retried_next_time():
    attempts: list[str] = []

    def down(masterplan_id: str) -> None:
        attempts.append(masterplan_id)
        raise ConnectionError("database down")

    registry = MasterplanRegistry(create=down)
    assert registry.ensure(A) is False
    assert registry.ensure(A) is False
    assert len(attempts) == 2


def test_the_global_scope_is_not_a_masterplan_and_bad_ids_are_refused():
    registry = MasterplanRegistry(create=lambda mp: pytest.fail("must not register"))
    assert registry.ensure(None) is False
    with pytest.raises(ValueError, match="UUID"):
        registry.ensure("not-a-uuid")


@pytest.mark.django_db
def test_a_deleted_masterplan_is_registered_again_when_used_again():
    ensure_masterplan_registered(A)
    Masterplan.objects.filter(pk=A).delete()  # post_delete: this process forgets the id
    ensure_masterplan_registered(A)
    assert Masterplan.objects.filter(pk=A).exists()


@pytest.mark.django_db(transaction=True)
async def test_async_callers_register_on_the_orm_thread():
    assert await aensure_masterplan_registered(C) is True
    assert await arun_orm(Masterplan.objects.filter(pk=C).exists)  # the ORM thread: closed after the test
