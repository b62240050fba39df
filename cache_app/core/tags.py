"""Generation tags shared by every cache layer.

A stored value starts with ``e<epoch>g<generation>|``: the scope's epoch and generation
when it was written. Invalidation bumps the generation, so an old tag no longer matches
and the entry reads as dead without being touched (O(1) invalidation).
"""

from __future__ import annotations

# The field separating the generation tag from the payload inside a stored value.
TAG_SEPARATOR = b"|"


def make_tag(epoch: bytes | str | int | None, generation: bytes | str | int | None) -> bytes:
    """``e<epoch>g<gen>|`` — must match ``TAG_LUA`` in core/scripts.py byte for byte."""
    if type(epoch) is not bytes:
        epoch = b"0" if epoch is None else str(epoch).encode()
    if type(generation) is not bytes:
        generation = b"0" if generation is None else str(generation).encode()
    return b"e" + epoch + b"g" + generation + TAG_SEPARATOR
