"""The combined-prompt format and its parser.

A batch of N > 1 prompts becomes one upstream prompt::

    PROMPT 1 [batch 3fa9c2d1] (atom: 6f1c...):
    <prompt 1, verbatim>

    PROMPT 2 [batch 3fa9c2d1] (atom: 0b7e...):
    <prompt 2, verbatim>

    Return responses in format:
    RESPONSE 1 [batch 3fa9c2d1]:
    <response to prompt 1>

    RESPONSE 2 [batch 3fa9c2d1]:
    <response to prompt 2>
    ...

Why it is unambiguous (docs/batching.md has the long version):

* Every marker carries the batch nonce. The nonce is an HMAC of the whole batch
  (atom ids and prompt texts) under a random per-process secret, so no prompt author
  can know it in advance: it depends on their own prompt, and it is re-drawn if it
  happens to occur inside any prompt. The parser only recognises markers that carry
  the nonce, so text in a prompt or an answer that imitates ``RESPONSE 2:`` (without
  the nonce) is plain content and cannot move a boundary.
* Answers are matched by the number in the marker, never by position.
* Anything suspicious is *not attributed*: a number that appears twice, a number out of
  range, an empty answer, and the answer that a suspicious marker cut short. The caller
  (the batcher) re-sends those atoms alone; nothing is padded or guessed.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from uuid import UUID

NONCE_LENGTH = 8
# Per-process secret: nonces are unpredictable to anyone who writes prompts, yet the
# same batch gives the same nonce within this process, so combine and parse agree
# without carrying extra state around.
_SECRET = secrets.token_bytes(32)
_MAX_NONCE_ATTEMPTS = 1000

RESPONSES_HEADER = "Return responses in format:"


@dataclass(eq=False)
class BatchedRequest:
    """One caller's request waiting in (or sent with) a batch."""

    atom_id: UUID
    prompt: str
    future: asyncio.Future
    # Monotonic time the request was queued (for mgecache_batch_wait_seconds).
    enqueued_at: float = field(default=0.0)


@dataclass(frozen=True)
class ParsedBatch:
    """What the parser could attribute, by position in the request list.

    ``answers[i]`` is the answer to ``requests[i]`` or None when it could not be
    attributed safely; ``problems[i]`` says why (missing, empty, duplicated,
    truncated).
    """

    nonce: str
    answers: list[str | None]
    problems: dict[int, str]


def batch_nonce(requests: Sequence[BatchedRequest]) -> str:
    """The nonce of this batch: 8 hex characters that occur in none of its prompts."""
    parts: list[bytes] = []
    for request in requests:
        data = request.prompt.encode("utf-8", "surrogatepass")
        parts += (str(request.atom_id).encode("ascii"), len(data).to_bytes(8, "big"), data)
    message = b"".join(parts)
    lowered = [request.prompt.lower() for request in requests]
    for attempt in range(_MAX_NONCE_ATTEMPTS):
        nonce = hmac.digest(_SECRET, message + attempt.to_bytes(4, "big"), "sha256").hex()[:NONCE_LENGTH]
        # The parser is case-insensitive, so compare case-insensitively.
        if not any(nonce in text for text in lowered):
            return nonce
    raise ValueError("could not find a nonce absent from every prompt")  # needs ~GBs of prompt text


def prompt_marker(index: int, nonce: str, atom_id: UUID) -> str:
    return f"PROMPT {index} [batch {nonce}] (atom: {atom_id}):"


def response_marker(index: int, nonce: str) -> str:
    return f"RESPONSE {index} [batch {nonce}]:"


def combine_prompts(requests: Sequence[BatchedRequest]) -> str:
    """The one upstream prompt for a batch (see the module docstring). A batch of one is its plain prompt."""
    if not requests:
        raise ValueError("combine_prompts needs at least one request")
    if len(requests) == 1:
        return requests[0].prompt
    nonce = batch_nonce(requests)
    parts: list[str] = []
    for index, request in enumerate(requests, start=1):
        parts.append(f"{prompt_marker(index, nonce, request.atom_id)}\n{request.prompt}\n\n")
    parts.append(f"{RESPONSES_HEADER}\n")
    for index in range(1, len(requests) + 1):
        parts.append(f"{response_marker(index, nonce)}\n<response {index}>\n")
    parts.append("(Answer each prompt on its own, under its RESPONSE line copied exactly.)\n")
    return "".join(parts)


# Markdown a model may wrap a marker in: "**RESPONSE 1 [batch x]:**", "## RESPONSE 1 ...",
# "__RESPONSE 1 [batch x]__:", "> RESPONSE 1 ...". Markers must start a line. The regexes
# accept any nonce-shaped tag and the parser keeps only this batch's nonce: one compiled
# pattern for every batch instead of one per nonce.
_DECOR = r"[*_`]{0,3}"


def _marker_regex(kind: str) -> re.Pattern[str]:
    return re.compile(
        rf"^[ \t>]*(?:\#{{1,6}}[ \t]*)?{_DECOR}[ \t]*{kind}[ \t]+(\d{{1,6}})[ \t]*{_DECOR}[ \t]*"
        rf"\[[ \t]*batch[ \t]+([0-9a-z]{{1,32}})[ \t]*\]"
        rf"(?:[ \t]*\(atom:[^)\n]*\))?[ \t]*{_DECOR}[ \t]*:?[ \t]*{_DECOR}[ \t]*",
        re.IGNORECASE | re.MULTILINE,
    )


_RESPONSE_RE = _marker_regex("RESPONSE")
_PROMPT_RE = _marker_regex("PROMPT")
# A trailing horizontal rule ("---", "***") some models put between sections.
_TRAILING_RULE = re.compile(r"(?:\n[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*)+\s*\Z")


def _clean(segment: str) -> str:
    return _TRAILING_RULE.sub("", segment).strip()


class _Boundary(NamedTuple):
    start: int
    end: int
    kind: str  # "response" or "prompt"
    number: int


def _boundaries(text: str, nonce: str) -> list[_Boundary]:
    """Every marker of this batch, in text order.

    A marker tag with any other value is plain text. PROMPT markers (a model echoing the
    prompts) end the previous answer but start none.
    """
    found = [
        _Boundary(match.start(), match.end(), kind, int(match.group(1)))
        for kind, regex in (("response", _RESPONSE_RE), ("prompt", _PROMPT_RE))
        for match in regex.finditer(text)
        if match.group(2).lower() == nonce
    ]
    return sorted(found)


def _judge(
    text: str, boundary: _Boundary, following: _Boundary | None, seen: Counter[int], count: int
) -> tuple[str | None, str | None]:
    """(answer, None) for the section after ``boundary``, or (None, why it cannot be attributed)."""
    if seen[boundary.number] > 1:
        return None, "duplicated"
    segment = _clean(text[boundary.end : following.start if following else len(text)])
    if not segment:
        return None, "empty"
    if following is not None and _suspicious(following, seen, count):
        return None, "truncated"
    return segment, None


def _suspicious(boundary: _Boundary, seen: Counter[int], count: int) -> bool:
    """A RESPONSE marker that is repeated or numbered outside the batch: it may have been
    planted inside the answer before it, and cut that answer short."""
    return boundary.kind == "response" and (not 1 <= boundary.number <= count or seen[boundary.number] > 1)


def analyse_batched_response(text: str, requests: Sequence[BatchedRequest]) -> ParsedBatch:
    """Attribute the sections of ``text`` to ``requests`` by marker number (see ParsedBatch).

    For a batch of one (sent as the plain prompt) the whole text is the answer, as returned.
    """
    if len(requests) == 1:
        return ParsedBatch(nonce="", answers=[text], problems={})
    nonce = batch_nonce(requests)
    count = len(requests)
    boundaries = _boundaries(text, nonce)
    seen = Counter(b.number for b in boundaries if b.kind == "response")
    answers: list[str | None] = [None] * count
    problems: dict[int, str] = {}
    for position, boundary in enumerate(boundaries):
        if boundary.kind != "response" or not 1 <= boundary.number <= count:
            continue
        following = boundaries[position + 1] if position + 1 < len(boundaries) else None
        answer, problem = _judge(text, boundary, following, seen, count)
        answers[boundary.number - 1] = answer
        if problem is not None:
            problems[boundary.number - 1] = problem
    for index in range(count):
        if answers[index] is None and index not in problems:
            problems[index] = "missing"
    return ParsedBatch(nonce=nonce, answers=answers, problems=problems)


def parse_batched_response(text: str, requests: Sequence[BatchedRequest]) -> dict[UUID, str]:
    """Only the answers that could be attributed, by atom id (a missing id means: re-send it alone)."""
    parsed = analyse_batched_response(text, requests)
    result: dict[UUID, str] = {}
    ambiguous: set[UUID] = set()
    for request, answer in zip(requests, parsed.answers, strict=True):
        if answer is None:
            continue
        if request.atom_id in result and result[request.atom_id] != answer:
            ambiguous.add(request.atom_id)  # one atom id, two different answers: attribute neither
        result[request.atom_id] = answer
    for atom_id in ambiguous:
        del result[atom_id]
    return result


@dataclass(frozen=True)
class SplitPrompt:
    nonce: str
    atoms: list[tuple[UUID | None, str]]


_ANY_PROMPT_MARKER = re.compile(
    rf"^PROMPT 1 \[batch (?P<nonce>[0-9a-f]{{{NONCE_LENGTH}}})\] \(atom: (?P<atom>[^)\n]*)\):\n", re.MULTILINE
)


_EXACT_PROMPT_MARKER = re.compile(r"^PROMPT (\d+) \[batch ([0-9a-f]+)\] \(atom: ([^)\n]*)\):\n", re.MULTILINE)


def split_combined_prompt(text: str) -> SplitPrompt | None:
    """Recover the prompts from a combined prompt (what a model, or the simulated LLM, sees).

    The first ``PROMPT 1 [batch <nonce>]`` line precedes every prompt's text, so it is the
    genuine one; every later boundary must carry that nonce. Returns None for a plain prompt.
    """
    first = _ANY_PROMPT_MARKER.search(text)
    if first is None or first.start() != 0:
        return None
    nonce = first.group("nonce")
    trailer = text.rfind(f"\n\n{RESPONSES_HEADER}\n")
    if trailer < 0:
        return None
    body = text[: trailer + 2]  # keep the "\n\n" that ends the last prompt
    matches = [m for m in _EXACT_PROMPT_MARKER.finditer(body) if m.group(2) == nonce]
    atoms: list[tuple[UUID | None, str]] = []
    for position, match in enumerate(matches):
        end = matches[position + 1].start() if position + 1 < len(matches) else len(body)
        prompt = body[match.end() : end]
        prompt = prompt.removesuffix("\n\n")
        try:
            atom: UUID | None = UUID(match.group(3))
        except ValueError:
            atom = None
        atoms.append((atom, prompt))
    return SplitPrompt(nonce=nonce, atoms=atoms)
