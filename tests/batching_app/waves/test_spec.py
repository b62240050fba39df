"""A wave's input: defaults and overrides, field errors, bounds, and how misses are cut into batches."""

from __future__ import annotations

import uuid

import pytest

from batching_app.waves import GenerationParams, WaveValidationError, build_atoms, plan_batches
from tests.batching_app.fakes import atom


def test_atoms_take_the_defaults_then_their_overrides():
    specs = build_atoms(
        {"model": "m1", "temperature": 0.2, "max_tokens": 100, "system": "be brief"},
        [atom("a"), atom("b", temperature=0, system="be long")],
    )
    assert specs[0].params == GenerationParams("m1", 0.2, 100, "be brief")
    assert specs[1].params == GenerationParams("m1", 0.0, 100, "be long")


@pytest.mark.parametrize(
    ("defaults", "atoms", "field"),
    [
        ({}, [], "atoms"),
        ({}, [{"atom_id": "x", "prompt": "p"}], "atoms.0.atom_id"),
        ({}, [{"atom_id": str(uuid.uuid4()), "prompt": "  "}], "atoms.0.prompt"),
        (
            {},
            [{"atom_id": str(uuid.uuid4()), "prompt": "p", "overrides": {"temperature": 3}}],
            "atoms.0.overrides.temperature",
        ),
        ({}, [{"atom_id": str(uuid.uuid4()), "prompt": "p", "overrides": {"top_p": 1}}], "atoms.0.overrides"),
        ({"max_tokens": 0}, [{"atom_id": str(uuid.uuid4()), "prompt": "p"}], "defaults.max_tokens"),
        ({"temperature": float("nan")}, [{"atom_id": str(uuid.uuid4()), "prompt": "p"}], "defaults.temperature"),
        ({"max_tokens": 1_000_001}, [{"atom_id": str(uuid.uuid4()), "prompt": "p"}], "defaults.max_tokens"),
    ],
)
def test_bad_input_names_the_field(defaults, atoms, field):
    with pytest.raises(WaveValidationError) as caught:
        build_atoms(defaults, atoms)
    assert field in caught.value.errors


def test_atom_ids_may_repeat_and_too_many_atoms_are_refused(settings):
    # Atom ids label the atoms; results keep the input order, so a repeated id stays unambiguous.
    same = str(uuid.uuid4())
    specs = build_atoms({}, [{"atom_id": same, "prompt": "a"}, {"atom_id": same, "prompt": "b"}])
    assert [(s.index, str(s.atom_id), s.prompt) for s in specs] == [(0, same, "a"), (1, same, "b")]
    settings.MGECACHE = {**settings.MGECACHE, "MAX_WAVE_ATOMS": 3}
    with pytest.raises(WaveValidationError, match="1 to 3"):
        build_atoms({}, [atom(f"p{i}") for i in range(4)])


def test_plan_batches_keeps_duplicates_together_and_parameters_apart():
    specs = build_atoms(
        {},
        [atom("a"), atom("b"), atom("a"), atom("c", model="other"), atom("d"), atom("e"), atom("f"), atom("b")],
    )
    batches = plan_batches(specs, 3)
    # Default parameters: distinct a, b, d | e, f (duplicates with their originals); then the other model.
    assert batches == [[0, 2, 1, 7, 4], [5, 6], [3]]
    assert plan_batches(specs, 1)[0] == [0, 2]
