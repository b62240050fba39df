"""Create (once) a benchmark-only virtualenv under var/bench/peers/<name> with pinned packages.

The pins live beside this file (``<name>.txt``); the venv is rebuilt when they change. Peers
never enter requirements*.txt: they are measured, not used.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "var" / "bench" / "peers"


def ensure(name: str) -> Path:
    """The python of the peer's venv, created and installed from ``benchmarks/peers/<name>.txt`` if needed."""
    pins = Path(__file__).with_name(f"{name}.txt")
    wanted = pins.read_text()
    home = PEERS / name
    python = home / "bin" / "python"
    marker = home / "installed.txt"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating the benchmark-only venv {home} ({pins.name}) ...", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(pins)], check=True)
    marker.write_text(wanted)
    return python
