"""The workload format: every problem names its line and field, and a bad file runs nothing."""

from __future__ import annotations

import json
import uuid

import pytest

from cache_app.proof.workload import MAX_PROBLEMS, WorkloadError, parse_lines, parse_workload

MP = str(uuid.uuid4())


def atom(**overrides) -> dict:
    record = {
        "masterplan": MP,
        "run": 1,
        "wave": 1,
        "atom_id": str(uuid.uuid4()),
        "prompt": "Implement Order.total",
        "temperature": 0.0,
    }
    record.update(overrides)
    return record


def lines(*records) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in records]


def problems(*records) -> list[str]:
    with pytest.raises(WorkloadError) as caught:
        parse_lines(lines(*records), source="w.jsonl")
    return [str(p) for p in caught.value.problems]


def test_a_valid_file_is_parsed_with_defaults_and_ordered_by_run_then_wave():
    first = atom(run=2, wave=1)
    second = atom(wave=2, rag_query="how is tax applied?", top_k=3, model="gpt-4o", max_tokens=50)
    third = atom(wave=1)
    workload = parse_lines(lines(first, "", second, third), source="w.jsonl")

    assert [a.line for a in workload.atoms] == [1, 3, 4]
    assert workload.atoms[1].top_k == 3
    assert workload.atoms[1].model == "gpt-4o"
    assert workload.atoms[2].top_k == 5
    assert workload.atoms[2].model is None
    assert workload.atoms[2].rag_query is None
    steps = workload.steps()
    assert [(s.run, s.wave, [a.line for a in s.atoms]) for s in steps] == [(1, 1, [4]), (1, 2, [3]), (2, 1, [1])]
    assert workload.masterplans == [MP]
    assert workload.runs == [1, 2]
    assert len(workload.sha256) == 64


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("{not json", "line 2: invalid JSON"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
        (atom(temperature=3), "line 2, field 'temperature': must be a number from 0 to 2, got 3"),
        (atom(temperature="0"), "line 2, field 'temperature': must be a number"),
        (atom(run=0), "line 2, field 'run': must be an integer from 1"),
        (atom(wave=True), "line 2, field 'wave': must be an integer"),
        (atom(atom_id="atom-7"), "line 2, field 'atom_id': must be a UUID"),
        (atom(masterplan=7), "line 2, field 'masterplan': must be a UUID string"),
        (atom(prompt="   "), "line 2, field 'prompt': must be a non-empty string"),
        (atom(max_tokens=0), "line 2, field 'max_tokens': must be an integer from 1"),
        (atom(top_k=5), "line 2, field 'top_k': given without a rag_query"),
        (atom(rag_query="q", top_k=101), "line 2, field 'top_k': must be an integer from 1 to 100"),
        (atom(temprature=0.0), "line 2, field 'temprature': unknown field"),
        (atom(prompt=None), "line 2, field 'prompt': must not be null"),
    ],
)
def test_each_problem_names_the_line_and_the_field(record, expected):
    found = problems(atom(), record)
    assert len(found) >= 1
    assert found[0].startswith(expected), found


def test_a_missing_required_field_is_named():
    record = atom()
    del record["wave"]
    assert problems(record) == ["line 1, field 'wave': is required"]


def test_an_atom_twice_in_one_run_is_refused_but_a_rerun_may_repeat_it():
    same = str(uuid.uuid4())
    parse_lines(lines(atom(atom_id=same), atom(atom_id=same, run=2)))  # run 2 re-executes it
    found = problems(atom(atom_id=same), atom(atom_id=same, wave=3))
    assert found == [f"line 2, field 'atom_id': {same} appears twice in run 1 (first on line 1)"]


def test_every_problem_is_reported_up_to_a_bound():
    found = problems(*[atom(temperature=-1) for _ in range(MAX_PROBLEMS + 5)])
    assert len(found) == MAX_PROBLEMS
    with pytest.raises(WorkloadError, match="and 5 more problems"):
        parse_lines(lines(*[atom(temperature=-1) for _ in range(MAX_PROBLEMS + 5)]))


def test_an_empty_file_and_unreadable_files_are_refused(tmp_path):
    assert problems("", "  ") == ["file: no atoms"]
    binary = tmp_path / "w.jsonl"
    binary.write_bytes(b"\xff\xfe{}\n")
    with pytest.raises(WorkloadError, match="is not UTF-8 text"):
        parse_workload(binary)
    with pytest.raises(WorkloadError, match="cannot be read"):
        parse_workload(tmp_path / "missing.jsonl")
    with pytest.raises(WorkloadError, match="is not a file"):
        parse_workload(tmp_path)
