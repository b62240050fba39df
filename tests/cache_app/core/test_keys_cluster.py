"""Key scheme v2 for Redis Cluster: one hash tag per scope, per-slot copies of the layer epoch."""

from __future__ import annotations

import uuid

import pytest
from redis.crc import key_slot as redis_key_slot

from cache_app.core import keys

MP = str(uuid.UUID(int=42))


def slot(key: str) -> int:
    return redis_key_slot(key.encode())


def test_the_slot_table_has_one_tag_per_slot_that_hashes_to_it():
    tags = keys.all_slot_tags()
    assert len(tags) == keys.CLUSTER_SLOTS
    assert [keys.key_slot(tag) for tag in tags] == list(range(keys.CLUSTER_SLOTS))
    assert list(tags) == keys.generate_slot_tags()  # the shipped file is what the generator makes


@pytest.mark.parametrize("masterplan_id", [None, MP])
def test_every_key_of_a_scope_shares_one_slot(masterplan_id):
    scope_slot = keys.key_slot(keys.scope(masterplan_id))
    nsid, digest = "a" * 32, "b" * 64
    log_base = keys.rag_log_base(masterplan_id, nsid, 8)
    same_slot = [
        *keys.llm_lookup(masterplan_id, digest),
        keys.llm_epoch(masterplan_id),
        keys.llm_generation(masterplan_id),
        keys.llm_entry(masterplan_id, digest),
        *keys.rag_lookup(masterplan_id, digest, nsid, 8)[:4],
        keys.rag_epoch(masterplan_id),
        keys.rag_namespaces(masterplan_id),
        keys.rag_log_head(log_base),
        keys.rag_log_first(log_base),
        keys.rag_log_segment(log_base, 12),
    ]
    if masterplan_id is not None:
        same_slot.append(keys.stats("llm", masterplan_id))
    assert {slot(key) for key in same_slot} == {scope_slot}


def test_the_layer_epoch_has_a_copy_in_every_slot():
    copies = keys.llm_epoch_copies()
    assert sorted(slot(key) for key in copies) == list(range(keys.CLUSTER_SLOTS))
    assert keys.llm_epoch(MP) in copies
    assert keys.rag_epoch(MP) in keys.rag_epoch_copies()


def test_parsers_read_tagged_keys_and_refuse_the_others():
    digest = "c" * 64
    assert keys.parse_llm_entry(keys.llm_entry(MP, digest)) == MP
    assert keys.parse_llm_entry(keys.llm_entry(None, digest)) == keys.GLOBAL_SCOPE
    assert keys.parse_llm_entry(keys.llm_epoch(MP)) is None
    assert keys.parse_llm_entry(keys.llm_generation(MP)) is None
    assert keys.parse_rag_entry(keys.rag_entry(MP, digest)) == MP
    assert keys.parse_rag_namespaces(keys.rag_namespaces(MP)) == MP
    assert keys.parse_stats_scope(keys.stats("llm", MP), "llm") == MP
    assert keys.parse_stats_scope(keys.stats("llm"), "llm") is None
    assert keys.prefix().endswith(":v2:")
    assert "v1" in keys.RETIRED_VERSIONS
