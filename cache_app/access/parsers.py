"""The API's only request parser: JSON, bounded in size and nesting depth before it is decoded."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from cache_app.core import conf

# A JSON string literal (unrolled loop: linear, no backtracking blow-up).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (0 for a scalar), in C-speed passes.

    Brackets inside strings do not count. Meant to run before ``json.loads``: a decoder
    recursing 100,000 levels deep would exhaust the stack.
    """
    structure = np.frombuffer(_STRING.sub("", text).encode("utf-8"), dtype=np.uint8)
    if not structure.size:
        return 0
    steps = ((structure == ord("[")) | (structure == ord("{"))).astype(np.int8)
    steps -= ((structure == ord("]")) | (structure == ord("}"))).astype(np.int8)
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class BoundedJSONParser(JSONParser):
    """JSON bodies of at most ``MAX_REQUEST_BYTES`` bytes and ``MAX_JSON_DEPTH`` levels (else 400)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        limit = int(conf.get("MAX_REQUEST_BYTES"))
        request = parser_context.get("request")
        declared = _content_length(request)
        if declared is not None and declared > limit:
            raise ParseError(f"The request body is larger than the limit of {limit} bytes.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise ParseError(f"The request body is larger than the limit of {limit} bytes.")
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.decode(raw, encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}")
        max_depth = int(conf.get("MAX_JSON_DEPTH"))
        # Depth never exceeds the count of opening brackets: most bodies skip the exact pass.
        if text.count("{") + text.count("[") > max_depth and nesting_depth(text) > max_depth:
            raise ParseError(f"JSON nesting is deeper than the limit of {max_depth} levels.")
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            raise ParseError(f"JSON nesting is deeper than the limit of {max_depth} levels.")
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}")


def _content_length(request: Any) -> int | None:
    if request is None:
        return None
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return None
