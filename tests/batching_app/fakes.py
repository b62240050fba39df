"""Test doubles for the batching tests: a controllable clock/timer and a scriptable LLM."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cache_app.llm import prompt_format


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
