"""``WaveExecutor``: a masterplan's atoms, wave by wave, through the pipeline's own clients.

Each atom does its RAG query (if it has one) through :class:`~cache_app.rag.engine.RAGEngine`,
then its generation through :class:`~cache_app.llm.client.LLMClient`, with caching,
single-flight and batching as configured: the code paths the API serves, not a copy.
The workload's prompt is sent as written (retrieved documents are counted, not spliced
in), so which prompts repeat, and so the LLM hit rate, follows from the file alone.

The seam: the executor orders steps, times them and reports progress; a
:class:`WaveRunner` runs the atoms of one step. :class:`ClientWaveRunner` is the
in-process one (``LLMClient`` + ``RAGEngine``); another runner, for example one that
sends a wave through the API's wave service, plugs in without touching the executor.

Upstream LLM calls are seen by a :class:`MeteredProvider` wrapped around the provider:
it records every call (combined batch calls and parse fallbacks included) with its tokens,
its price and its modelled latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from uuid import UUID

from cache_app.core.policies import BatchSettings, LayerPolicy, PolicySource
from cache_app.llm.client import LLMClient
from cache_app.llm.pricing import PriceTable
from cache_app.llm.prompt_format import split_combined_prompt
from cache_app.llm.providers import LLMProvider, ProviderRequest, ProviderResponse
from cache_app.llm.providers.simulated import SimulatedProvider
from cache_app.proof.workload import Atom, Step
from cache_app.rag.engine import RAGEngine


@dataclass(frozen=True)
class AtomOutcome:
    """What one atom saw. ``llm_layer``: "llm" (cache hit), "singleflight" (merged) or None (a call)."""

    run: int
    wave: int
    masterplan: str
    atom_id: UUID
    llm_attempted: bool = False
    llm_layer: str | None = None
    saved_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rag: str | None = None  # None: no query; "exact" | "similar" | "miss"
    rag_similarity: float | None = None
    rag_documents: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class UpstreamCall:
    run: int
    wave: int
    prompt_tokens: int
    completion_tokens: int
    atoms: int  # prompts answered by this call (> 1 for a combined batch call)
    cost_usd: float
    seconds: float  # measured
    modelled_seconds: float  # at the latency model's own scale (measured for a real provider)
    error: str | None = None


class MeteredProvider:
    """An ``LLMProvider`` that records every upstream call of the provider it wraps.

    ``modelled_seconds(response, measured)`` gives a call's latency at the model's own
    scale (the simulated provider sleeps a scaled-down time). Calls are attributed to the
    step the executor is in (waves run one after another).
    """

    def __init__(
        self,
        inner: LLMProvider,
        *,
        prices: PriceTable,
        modelled_seconds: Callable[[ProviderResponse | None, float], float] | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.simulated = inner.simulated
        self._prices = prices
        self._modelled = modelled_seconds or (lambda response, measured: measured)
        self.position = (0, 0)
        self.calls: list[UpstreamCall] = []

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        run, wave = self.position
        combined = split_combined_prompt(request.prompt)
        atoms = len(combined.atoms) if combined is not None else 1
        started = time.perf_counter()
        try:
            response = await self.inner.complete(request)
        except Exception as exc:
            seconds = time.perf_counter() - started
            self.calls.append(
                UpstreamCall(run, wave, 0, 0, atoms, 0.0, seconds, self._modelled(None, seconds), type(exc).__name__)
            )
            raise
        seconds = time.perf_counter() - started
        cost = self._prices.cost_usd(request.model, response.prompt_tokens, response.completion_tokens)
        self.calls.append(
            UpstreamCall(
                run,
                wave,
                response.prompt_tokens,
                response.completion_tokens,
                atoms,
                cost,
                seconds,
                self._modelled(response, seconds),
            )
        )
        return response


def scaled_simulated_provider(
    *, scale: float, overhead_seconds: float, seconds_per_token: float, output_tokens: int
) -> tuple[SimulatedProvider, Callable[[ProviderResponse | None, float], float]]:
    """The simulated provider sleeping ``scale`` x its latency model, and that model at scale 1."""

    def modelled(response: ProviderResponse | None, measured: float) -> float:
        if response is None:
            return overhead_seconds
        return overhead_seconds + response.completion_tokens * seconds_per_token

    provider = SimulatedProvider(
        call_overhead_seconds=overhead_seconds * scale,
        seconds_per_output_token=seconds_per_token * scale,
        output_tokens=output_tokens,
    )
    return provider, modelled


class CachesOff:
    """A policy source that reads like ``inner`` with every cache layer and batching disabled (the baseline)."""

    def __init__(self, inner: PolicySource) -> None:
        self._inner = inner

    def layer(self, name: str) -> LayerPolicy:
        return replace(self._inner.layer(name), enabled=False)

    def llm(self) -> LayerPolicy:
        return self.layer("llm")

    def rag(self) -> LayerPolicy:
        return self.layer("rag")

    def batch(self) -> BatchSettings:
        return replace(self._inner.batch(), enabled=False)


class WaveRunner(Protocol):
    """Runs the atoms of one step; ``done()`` is called once per finished atom (progress)."""

    async def run_wave(
        self, atoms: Sequence[Atom], scopes: dict[str, str], done: Callable[[], None]
    ) -> list[AtomOutcome]: ...

    async def aclose(self) -> None: ...


class ClientWaveRunner:
    """Atoms of a wave in parallel (at most ``concurrency`` at once): RAGEngine, then LLMClient.

    ``scopes`` maps a workload masterplan to the masterplan id the caches see (a fresh
    scope per measured run). ``use_cache`` and ``use_batching`` are passed to
    ``LLMClient.generate`` as an API caller would; the policies decide the rest.
    """

    def __init__(
        self,
        client: LLMClient,
        engine: RAGEngine,
        *,
        concurrency: int,
        use_cache: bool,
        use_batching: bool,
        default_model: str,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.client = client
        self.engine = engine
        self.concurrency = concurrency
        self.use_cache = use_cache
        self.use_batching = use_batching
        self.default_model = default_model

    async def run_wave(
        self, atoms: Sequence[Atom], scopes: dict[str, str], done: Callable[[], None]
    ) -> list[AtomOutcome]:
        slots = asyncio.Semaphore(self.concurrency)

        async def one(atom: Atom) -> AtomOutcome:
            async with slots:
                try:
                    return await self.run_atom(atom, scopes[atom.masterplan])
                finally:
                    done()

        return list(await asyncio.gather(*(one(atom) for atom in atoms)))

    async def run_atom(self, atom: Atom, scope: str) -> AtomOutcome:
        started = time.perf_counter()
        outcome = AtomOutcome(atom.run, atom.wave, atom.masterplan, atom.atom_id)
        try:
            if atom.rag_query is not None:
                found = await self.engine.aquery(atom.rag_query, top_k=atom.top_k, masterplan_id=scope)
                outcome = replace(
                    outcome,
                    rag=found.match if found.cached else "miss",
                    rag_similarity=found.similarity,
                    rag_documents=len(found.documents),
                )
            outcome = replace(outcome, llm_attempted=True)
            response = await self.client.generate(
                atom.prompt,
                atom.model or self.default_model,
                atom.temperature,
                max_tokens=atom.max_tokens,
                use_cache=self.use_cache,
                use_batching=self.use_batching,
                atom_id=atom.atom_id,
                masterplan_id=UUID(scope),
            )
        except Exception as exc:  # one failed atom never stops the run; it is reported
            return replace(outcome, seconds=time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"[:300])
        return replace(
            outcome,
            llm_layer=response.cache_layer,
            saved_usd=response.saved_usd,
            prompt_tokens=response.prompt_tokens,
            completion_tokens=response.completion_tokens,
            seconds=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True)
class StepResult:
    run: int
    wave: int
    seconds: float
    outcomes: list[AtomOutcome]


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def close(self) -> Any: ...


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class WaveExecutor:
    """Runs the steps of a workload in order; the atoms of a step run together.

    ``on_step(step, result)`` is called after each step (the report snapshots metrics
    there); ``progress(step)`` returns a progress bar for the step.
    """

    def __init__(
        self,
        runner: WaveRunner,
        *,
        meter: MeteredProvider | None = None,
        progress: Callable[[Step], Progress] | None = None,
        on_step: Callable[[Step, StepResult], None] | None = None,
    ) -> None:
        self.runner = runner
        self.meter = meter
        self._progress = progress or (lambda step: _NoProgress())
        self._on_step = on_step

    async def run(self, steps: Sequence[Step], scopes: dict[str, str]) -> list[StepResult]:
        results: list[StepResult] = []
        try:
            for step in steps:
                results.append(await self.run_step(step, scopes))
        finally:
            await self.runner.aclose()
        return results

    async def run_step(self, step: Step, scopes: dict[str, str]) -> StepResult:
        if self.meter is not None:
            self.meter.position = (step.run, step.wave)
        bar = self._progress(step)
        started = time.perf_counter()
        try:
            outcomes = await self.runner.run_wave(step.atoms, scopes, lambda: bar.update(1))
        finally:
            bar.close()
        result = StepResult(step.run, step.wave, time.perf_counter() - started, outcomes)
        if self._on_step is not None:
            self._on_step(step, result)
        return result
