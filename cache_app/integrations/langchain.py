"""LangChain's LLM cache on mgecache's LLM prompt cache.

Needs the optional extra: ``pip install -r requirements-langchain.txt``. Then::

    from langchain_core.globals import set_llm_cache
    from cache_app.integrations.langchain import MgecacheLLMCache

    set_llm_cache(MgecacheLLMCache(masterplan_id="6f1c..."))

An entry is an ``LLMPromptCache`` entry whose identity is LangChain's prompt, the model name
``langchain`` and LangChain's ``llm_string`` (the model and every parameter, serialised by
LangChain) as a generation parameter; its text is the list of generations as JSON
(``langchain_core.load.dumpd``), read back with an allowlist of output and message classes,
never pickle. Policy, TTL, fail-open (a Redis outage is a miss), scoping and statistics are
the LLM cache's. ``clear()`` invalidates this adapter's masterplan scope only (the global
scope when ``masterplan_id`` is None, which it shares with other global-scope LLM entries).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core._api import suppress_langchain_beta_warning
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumpd, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation, GenerationChunk

from cache_app.core import keys
from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.providers import estimate_tokens

logger = logging.getLogger(__name__)

MODEL = "langchain"  # the entries' model; LangChain's real model is inside llm_string
# What a cached entry may revive: generations and the messages they carry, nothing else.
ALLOWED_OBJECTS = (
    Generation,
    GenerationChunk,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ChatMessage,
    ChatMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
)


class MgecacheLLMCache(BaseCache):
    """``langchain_core.caches.BaseCache`` backed by :class:`~cache_app.llm.cache.LLMPromptCache`.

    ``masterplan_id``: the scope of every entry (None = the global scope). ``prompt_cache``:
    an injected cache (default: one on the configured Redis and policies).
    """

    def __init__(self, masterplan_id: Any = None, *, prompt_cache: LLMPromptCache | None = None) -> None:
        self.masterplan_id = keys.normalize_masterplan_id(masterplan_id)
        self.prompt_cache = prompt_cache or LLMPromptCache()

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = self.prompt_cache.get(prompt, MODEL, 0, masterplan_id=self.masterplan_id, llm_string=llm_string)
        return None if hit is None else _loads(hit.text)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        text, tokens = _dumps(return_val)
        self.prompt_cache.set(
            prompt,
            MODEL,
            0,
            text,
            prompt_tokens=estimate_tokens(prompt),
            completion_tokens=tokens,
            masterplan_id=self.masterplan_id,
            llm_string=llm_string,
        )

    def clear(self, **kwargs: Any) -> None:
        """Invalidate this adapter's scope (one INCR); its keys are deleted in the background."""
        self.prompt_cache.invalidate_masterplan(self.masterplan_id, reclaim="celery")

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = await self.prompt_cache.aget(prompt, MODEL, 0, masterplan_id=self.masterplan_id, llm_string=llm_string)
        return None if hit is None else _loads(hit.text)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        text, tokens = _dumps(return_val)
        await self.prompt_cache.aset(
            prompt,
            MODEL,
            0,
            text,
            prompt_tokens=estimate_tokens(prompt),
            completion_tokens=tokens,
            masterplan_id=self.masterplan_id,
            llm_string=llm_string,
        )

    async def aclear(self, **kwargs: Any) -> None:
        await self.prompt_cache.ainvalidate_masterplan(self.masterplan_id, reclaim="celery")


def _dumps(generations: Sequence[Generation]) -> tuple[str, int]:
    """The generations as JSON, and their estimated output tokens."""
    text = json.dumps([dumpd(generation) for generation in generations], ensure_ascii=False)
    return text, sum(estimate_tokens(generation.text) for generation in generations)


def _loads(text: str) -> RETURN_VAL_TYPE | None:
    try:
        with suppress_langchain_beta_warning():  # load() is marked beta; its format is stable JSON
            generations = load(json.loads(text), allowed_objects=ALLOWED_OBJECTS)
    except Exception as exc:  # an entry this adapter cannot read is a miss, not an error
        logger.warning(
            "LangChain cache entry could not be read (%s: %s); treating it as a miss", type(exc).__name__, exc
        )
        return None
    if not isinstance(generations, list) or not all(isinstance(g, Generation) for g in generations):
        logger.warning("LangChain cache entry is not a list of generations; treating it as a miss")
        return None
    return generations
