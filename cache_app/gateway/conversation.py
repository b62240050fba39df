"""A chat request in canonical form, and how a conversation becomes LLMClient's prompt and system.

Both wire formats parse into a :class:`ChatRequest`. It maps onto
``LLMClient.generate(prompt, model, temperature, max_tokens=, system=)``, whose arguments
are the cache identity (``cache_app.llm.cache.codec.identity_digest``), so the mapping below
is what decides which requests share a cached answer.

* **system**: the system text (OpenAI ``system``/``developer`` messages, Anthropic's
  ``system`` field); several parts are joined with a blank line. Absent or empty = no system.
* **prompt**, for a conversation of exactly one user turn: that turn's text, unchanged. It is
  then the same request as ``POST /api/v2/llm/generate`` with that prompt (the same upstream call,
  so the same cache entry).
* **prompt**, for any other conversation: a transcript in which every turn states its role and
  its length in characters::

      <conversation turns="3">
      <turn role="user" chars="5">
      Hello
      </turn>
      <turn role="assistant" chars="9">
      Hi there!
      </turn>
      <turn role="user" chars="12">
      What is 2+2?
      </turn>
      </conversation>

  Reading it back needs no escaping: each turn's text is exactly ``chars`` characters, so two
  different conversations never give the same transcript (the encoding is injective), whatever
  their texts contain. A turn's text parts (content blocks) are joined with a blank line.
* **model**, **temperature** and **max_tokens** go through as given (temperature defaults
  to 1.0, both APIs' documented default). Generation parameters the gateway cannot honour
  are refused (400) by the formats rather than ignored, so no parameter that changes the
  answer is left out of the identity.

What is sent upstream is exactly this prompt and system, so a cached answer is always the
answer to the request that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("user", "assistant")
PART_SEPARATOR = "\n\n"
# Bounds on what one request may carry (the body size itself is bounded by Django's
# DATA_UPLOAD_MAX_MEMORY_SIZE).
MAX_TURNS = 1000
MAX_OUTPUT_TOKENS = 1_000_000
MAX_MODEL_LENGTH = 100  # ModelPricing.model's max_length
DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str


@dataclass(frozen=True)
class ChatRequest:
    model: str
    turns: tuple[Turn, ...]
    system: str | None = None
    temperature: float = DEFAULT_TEMPERATURE
    max_tokens: int | None = None
    stream: bool = False
    # OpenAI's stream_options.include_usage: a last chunk carrying the usage.
    stream_usage: bool = False

    @property
    def prompt(self) -> str:
        return serialize_turns(self.turns)


def serialize_turns(turns: tuple[Turn, ...]) -> str:
    """The canonical prompt of a conversation (see the module docstring)."""
    if len(turns) == 1 and turns[0].role == "user":
        return turns[0].text
    lines = [f'<conversation turns="{len(turns)}">']
    for turn in turns:
        lines.append(f'<turn role="{turn.role}" chars="{len(turn.text)}">\n{turn.text}\n</turn>')
    lines.append("</conversation>")
    return "\n".join(lines)


def join_parts(parts: list[str]) -> str:
    return PART_SEPARATOR.join(parts)
