"""The curl examples of docs/api.md run against a live server, and every v2 route has one.

The fenced ``sh`` blocks that call curl run in order in one bash process (so an id captured by one
block is used by the next), with ``MGECACHE_URL`` and ``MGECACHE_KEY`` pointing at the test's server
and an admin key. Each curl uses ``--fail-with-body``: any answer of 400 or more fails the script.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.conftest import IN_CI, ROOT

DOC = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
MARK = "=== example {} ==="


def curl_blocks() -> list[str]:
    return [block for block in BLOCK.findall(DOC.read_text()) if "curl " in block]


def documented_calls(blocks: list[str]) -> set[tuple[str, str]]:
    """(method, path after /api/v2/) of every curl call in the examples."""
    calls = set()
    for block in blocks:
        command = block.replace("\\\n", " ")
        for call in re.findall(r"curl .*", command):
            method = re.search(r"-X (\w+)", call)
            path = re.search(r'\$MGECACHE_URL/api/v2/([^"?\s]*)', call)
            assert path, call
            calls.add((method.group(1) if method else "GET", path.group(1)))
    return calls


def test_every_v2_operation_has_an_example(db):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    calls = documented_calls(curl_blocks())
    v2 = {path: operations for path, operations in schema["paths"].items() if path.startswith("/api/v2/")}
    assert len(v2) == 12
    for path, operations in v2.items():
        pattern = re.compile(re.sub(r"\\\{\w+\\\}", r"[^/]+", re.escape(path.removeprefix("/api/v2/"))) + "$")
        for method in operations:
            assert any(m == method.upper() and pattern.match(p) for m, p in calls), f"no example: {method} {path}"


@pytest.mark.slow
@pytest.mark.redis_server
@pytest.mark.postgres
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_the_curl_examples_run_against_a_live_server(live_stack):
    if not shutil.which("curl"):
        if IN_CI:
            pytest.fail("CI=true but curl is not installed")
        pytest.skip("needs curl")
    blocks = curl_blocks()
    script = "set -euo pipefail\n" + "".join(f"echo '{MARK.format(i)}'\n{b}\necho\n" for i, b in enumerate(blocks))
    env = {"PATH": "/usr/bin:/bin", "MGECACHE_URL": live_stack.url, "MGECACHE_KEY": live_stack.key}
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    outputs = re.split(r"=== example \d+ ===\n", proc.stdout)[1:]
    assert len(outputs) == len(blocks)
    for block, output in zip(blocks, outputs, strict=True):
        if "$(" in block:  # it captured an id, and echoed it
            uuid.UUID(output.strip())
        else:
            assert isinstance(json.loads(output), dict), (block, output)
