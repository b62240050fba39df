"""benchmarks/http.py carries the standard library's name: it must never stand in for it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_a_script_of_the_benchmarks_folder_still_imports_the_standard_librarys_http():
    # A script run from benchmarks/ has that folder first on sys.path, as here.
    out = run("import sys; sys.path.insert(0, 'benchmarks'); import http.client, http.cookies; print(http.__file__)")
    assert "benchmarks" not in out
    assert out.strip().endswith("__init__.py")


def test_the_http_benchmark_script_starts():
    out = subprocess.run(
        [sys.executable, "benchmarks/http.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "LiteLLM" in out
