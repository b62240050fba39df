"""Following a namespace's vector log in Redis: where a process stands, what it still lacks, who fetches it.

A namespace (embedding model, top_k, scope) has an append-only log in Redis made of
segments (``keys.rag_log_segment``): every ``set`` APPENDs one fixed-size record (see
codec.py). A process keeps, per namespace, its position in the log (segment, byte offset)
and reads what was appended since with ``GETRANGE`` inside the lookup's single round trip,
so an entry written by another process is searchable on the very next lookup. A process
that has never seen the namespace (or fell too far behind) rebuilds it from the retained
segments with one pipelined GET and one ``np.frombuffer``.

``LogMirror`` is the part of ``index.NamespaceIndex`` that does this; the rows it appends
and resets (``_append``, ``_reset``) are the index's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

# A caller fetching whole segments (a rebuild) holds the namespace's loader claim at most
# this long; concurrent callers wait for it instead of fetching the same segments again.
LOADER_CLAIM_SECONDS = 10.0


@dataclass(frozen=True)
class Position:
    version: int
    segment: int | None
    offset: int
    reading: int = 0  # orders this lookup's Redis reads against the tags other lookups observed


@dataclass
class Horizon:
    """What one lookup must find in the mirror: every record appended before it read the log head.

    ``head`` and ``first`` are the log's head and first segment as the lookup read them;
    ``length`` is the size of segment ``head`` as seen by a read the lookup made after
    that (None until it made one). Records of segments below ``head``, and the first
    ``length`` bytes of ``head``, are what the lookup is owed.
    """

    head: int | None
    first: int | None
    length: int | None = None

    def saw(self, number: int, start: int, data: bytes) -> None:
        if number == self.head:
            self.length = max(self.length or 0, start + len(data))


class LogMirror:
    """The log-following half of a namespace index. All methods take ``self.lock`` themselves."""

    # Set by the index's __init__ (see index.NamespaceIndex).
    lock: threading.Lock
    dtype: np.dtype
    retention_segments: int
    version: int
    segment: int | None
    offset: int
    sealed: bool
    log_first: int | None
    _readings: int
    _loader: object | None
    _loader_until: float

    def _append(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    # --- mirroring the Redis log -------------------------------------------------------------
    def position(self) -> Position:
        """Where the mirror stands, taken by a lookup just before it reads Redis."""
        with self.lock:
            self._readings += 1
            return Position(self.version, self.segment, self.offset, self._readings)

    def _apply_segment(self, number: int, start: int, data: bytes, now: float, complete: bool = False) -> bool:
        """Apply bytes read from segment ``number`` at ``start``. False if they are misaligned (corrupt).

        ``complete``: the bytes run to the end of a segment that can grow no more (read after
        the head moved past it). Bytes another caller already applied are skipped, so
        overlapping catch-ups never double a row.
        """
        if len(data) % self.dtype.itemsize or start % self.dtype.itemsize:
            return False
        if self.segment is not None and number == self.segment + 1 and start == 0 and self.sealed:
            self.segment, self.offset, self.sealed = number, 0, False
        if number != self.segment or start > self.offset:
            return True  # not contiguous with what we hold: ignore (the caller's catch-up plan repairs it)
        skip = self.offset - start  # another caller applied part of this already
        if skip < len(data):
            self._append(data[skip:], now)
            self.offset = start + len(data)
        if complete:
            self.sealed = True
        return True

    def advance(
        self, requested: Position, horizon: Horizon, tail_reads: list[bytes], now: float
    ) -> tuple[int, list[tuple[int, int]]]:
        """Apply the incremental reads of a lookup; return what the mirror still lacks for ``horizon``.

        ``tail_reads`` are ``GETRANGE(segment, offset)`` and ``GETRANGE(segment + 1, 0)`` made at
        ``requested``, after the head was read. They are applied only if the mirror has not
        restarted since. Returns ``(version, reads)``: the ``(segment, start)`` ranges to fetch
        (see ``plan``). Misaligned (corrupt) bytes reset the mirror, which then rebuilds.
        """
        with self.lock:
            head = horizon.head
            if head is not None and requested.segment is not None and tail_reads:
                horizon.saw(requested.segment, requested.offset, tail_reads[0])
                if head > requested.segment and len(tail_reads) > 1:
                    horizon.saw(requested.segment + 1, 0, tail_reads[1])
                if requested.version == self.version and self.segment is not None:
                    ok = self._apply_segment(
                        requested.segment, requested.offset, tail_reads[0], now, complete=head > requested.segment
                    )
                    if ok and head > requested.segment and len(tail_reads) > 1:
                        ok = self._apply_segment(
                            requested.segment + 1, 0, tail_reads[1], now, complete=head > requested.segment + 1
                        )
                    if not ok:
                        self._reset()
            return self.version, self._plan(horizon)

    def plan(self, horizon: Horizon) -> tuple[int, list[tuple[int, int]]]:
        """``(version, reads)``: the ``(segment, start)`` ranges to fetch (in order) to cover ``horizon``.

        Empty when the mirror already holds everything the lookup is owed, whichever caller
        fetched it: it moved past the lookup's head segment (segments are only left sealed),
        or it holds at least ``horizon.length`` bytes of it.
        """
        with self.lock:
            return self.version, self._plan(horizon)

    def _plan(self, horizon: Horizon) -> list[tuple[int, int]]:
        head = horizon.head
        if head is None:
            if self.segment is not None:
                self._reset()  # the log is gone: every entry in it expired or was reclaimed
            return []
        if self.segment is not None and not self._follows(self.segment, head, horizon.first):
            self._reset()
        segment = self.segment if self.segment is not None else self._start_rebuild(head, horizon.first)
        if segment > head:
            return []
        if segment == head:
            if self.sealed or (horizon.length is not None and self.offset >= horizon.length):
                return []
            return [(head, self.offset)]
        reads = [] if self.sealed else [(segment, self.offset)]  # the rest of a segment read halfway
        return reads + [(number, 0) for number in range(segment + 1, head + 1)]

    def _follows(self, segment: int, head: int, first: int | None) -> bool:
        """Whether the mirror at ``segment`` can catch up with a log read at ``head`` by reading on."""
        known = first is not None and self.log_first is not None
        if known and first != self.log_first:
            return False  # another log: rebuild
        if not known and head < segment:
            return False  # cannot tell: a head below ours means a new log
        # A head below our segment, in the same log, is only an older reading than another
        # caller's: nothing to do. Too far behind: rebuild.
        return head <= segment + self.retention_segments

    def _start_rebuild(self, head: int, first: int | None) -> int:
        """First use, a log that restarted, or too far behind: rebuild from the retained segments."""
        start = head - self.retention_segments + 1
        if first is not None and start < first <= head:
            start = first
        self.segment, self.offset, self.sealed, self.log_first = start - 1, 0, True, first
        return self.segment

    # --- one loader at a time ----------------------------------------------------------------
    def claim_loading(self, seconds: float = LOADER_CLAIM_SECONDS) -> object | None:
        """Become the one caller fetching segments (others wait for it), or None if taken."""
        with self.lock:
            now = time.monotonic()
            if self._loader is not None and now < self._loader_until:
                return None
            self._loader, self._loader_until = object(), now + seconds
            return self._loader

    def release_loading(self, claim: object) -> None:
        with self.lock:
            if self._loader is claim:
                self._loader = None

    def loading(self) -> bool:
        with self.lock:
            return self._loader is not None and time.monotonic() < self._loader_until

    def load_segments(
        self,
        version: int,
        segments: list[tuple[int, int, bytes | None]],
        now: float,
        horizon: Horizon | None = None,
    ) -> bool | None:
        """Apply ``(segment, start, bytes)`` read (in order) for a plan made at ``version``.

        True: applied. None: the mirror restarted since the plan (nothing applied; plan again).
        False: corrupt bytes (the mirror was reset). Segments below ``horizon.head`` were read
        after the head moved past them, so they are complete.
        """
        with self.lock:
            if version != self.version:
                return None
            for number, start, data in segments:
                data = data or b""
                if horizon is not None:
                    horizon.saw(number, start, data)
                complete = horizon is not None and horizon.head is not None and number < horizon.head
                if not self._apply_segment(number, start, data, now, complete=complete):
                    self._reset()
                    return False
            return True
