"""Hooks for a manual ``st run`` against a server (docs/api.md, "Checking the schema").

A client sends a new Idempotency-Key for each new request; the generator repeats simple values, and a
repeat with another body is the documented 422. Each request keeps its generated key, made unique.

    SCHEMATHESIS_HOOKS=tests.live.schemathesis_hooks st run "$MGECACHE_URL/api/schema/?format=json" \\
      -H "Authorization: Bearer $MGECACHE_KEY" --checks all --mode all
"""

import itertools
import re

import schemathesis

_counter = itertools.count()
_VALID = re.compile(r"[!-~]([ -~]*[!-~])?")  # the schema's pattern: an invalid key stays as generated


@schemathesis.hook
def before_call(context, case, kwargs):  # type: ignore[no-untyped-def]
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and len(key) <= 255 and _VALID.fullmatch(key):
        headers["Idempotency-Key"] = f"{next(_counter)}:{key}"[:255].rstrip()
