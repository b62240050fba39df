"""Test doubles for the batching tests: a controllable clock/timer, a scriptable LLM, a recording provider."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

from prometheus_client import REGISTRY

from cache_app.llm import prompt_format
from cache_app.llm.prompt_format import split_combined_prompt
from cache_app.llm.providers import SimulatedProvider


class ManualClock:
    """Monotonic time that only moves when the test says so; ``sleep`` waits on it.

    Passed as both ``clock=`` and ``sleep=`` to RequestBatcher, it makes the batch window
    fire exactly when the test advances past it, without any wall-clock wait.
    """

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._waiters: list[tuple[float, asyncio.Future]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        await settle()  # whatever is ready runs first (and registers its sleeps), then time passes
        self.now += seconds
        due = [(deadline, fut) for deadline, fut in self._waiters if deadline <= self.now + 1e-12]
        self._waiters = [(d, f) for d, f in self._waiters if (d, f) not in due]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every ready task run (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def answer_for(prompt: str) -> str:
    """What the fake model answers to one prompt: identifiable, so a swapped answer is caught."""
    return f"answer<{prompt}>"


def well_behaved(split: prompt_format.SplitPrompt) -> str:
    return "".join(
        f"{prompt_format.response_marker(i, split.nonce)}\n{answer_for(text)}\n\n"
        for i, (_, text) in enumerate(split.atoms, start=1)
    )


class FakeLLM:
    """Answers like a model that follows the batch format; every part is scriptable.

    * ``respond(split)`` builds the text for a combined prompt (default: well behaved);
    * ``fail`` (an exception, or a callable prompt -> exception|None) makes a call raise;
    * ``gate``: when set, calls wait for it (to hold batches in flight).
    """

    def __init__(self, respond: Callable[[prompt_format.SplitPrompt], str] = well_behaved) -> None:
        self.respond = respond
        self.prompts: list[str] = []
        self.fail: BaseException | Callable[[str], BaseException | None] | None = None
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def calls(self) -> int:
        return len(self.prompts)

    def combined(self) -> list[prompt_format.SplitPrompt]:
        return [s for s in (prompt_format.split_combined_prompt(p) for p in self.prompts) if s is not None]

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            error = self.fail(prompt) if callable(self.fail) and not isinstance(self.fail, BaseException) else self.fail
            if error is not None:
                raise error
            split = prompt_format.split_combined_prompt(prompt)
            return answer_for(prompt) if split is None else self.respond(split)
        finally:
            self.in_flight -= 1


# --- LLM waves ---------------------------------------------------------------------------------


class RecordingProvider:
    """The simulated provider (no latency), recording every request it receives; thread-safe."""

    name = "recording"
    simulated = True

    def __init__(self) -> None:
        self.inner = SimulatedProvider(call_overhead_seconds=0.0, seconds_per_output_token=0.0)
        self.lock = threading.Lock()
        self.requests: list = []
        self.fail = None  # request -> exception or None

    async def complete(self, request):
        with self.lock:
            self.requests.append(request)
        error = self.fail(request) if self.fail else None
        if error is not None:
            raise error
        return self.inner.plan(request)

    def prompts_per_call(self) -> list[int]:
        sizes = []
        for request in self.requests:
            split = split_combined_prompt(request.prompt)
            sizes.append(1 if split is None else len(split.atoms))
        return sizes


def atom(prompt: str, **overrides) -> dict:
    data = {"atom_id": str(uuid.uuid4()), "prompt": prompt}
    if overrides:
        data["overrides"] = overrides
    return data


def twenty_atoms() -> tuple[list[str], list[dict]]:
    """5 prompts already cached, 10 fresh ones, then 5 duplicates of fresh ones."""
    cached = [f"cached step {i}" for i in range(5)]
    fresh = [f"fresh step {i}" for i in range(10)]
    return cached, [atom(p) for p in cached + fresh + fresh[:5]]


def cache_errors() -> float:
    """Every fail-open event so far (a Redis timeout makes lookups miss: the counts would be off)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "mgecache_cache_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
