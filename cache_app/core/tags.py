"""Generation tags shared by every cache layer.

A stored value starts with ``e<epoch>g<generation>|``: the scope's epoch and generation
when it was written. Invalidation bumps the generation, so an old tag no longer matches
and the entry reads as dead without being touched (O(1) invalidation).
"""

from __future__ import annotations

from dataclasses import dataclass

# The field separating the generation tag from the payload inside a stored value.
TAG_SEPARATOR = b"|"


def make_tag(epoch: bytes | str | int | None, generation: bytes | str | int | None) -> bytes:
    """``e<epoch>g<gen>|`` — must match ``TAG_LUA`` in core/scripts.py byte for byte."""
    if type(epoch) is not bytes:
        epoch = b"0" if epoch is None else str(epoch).encode()
    if type(generation) is not bytes:
        generation = b"0" if generation is None else str(generation).encode()
    return b"e" + epoch + b"g" + generation + TAG_SEPARATOR


@dataclass(frozen=True, slots=True)
class WriteToken:
    """What a miss hands its caller for the matching ``set``: the entry it missed and the scope tag it saw.

    A ``set`` carrying the token is stored only while that tag is still the scope's, so an
    answer computed for a generation invalidated meanwhile is refused. The caller holds the
    token (the cache keeps no per-key memory), so concurrent lookups of one key in one
    instance never consume or upgrade each other's tokens, and a miss whose set never
    comes leaves nothing behind.
    """

    key: str
    tag: bytes
