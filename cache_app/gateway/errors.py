"""One error type for the gateway; each wire format renders it in its own shape."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What went wrong, independent of the wire format (its HTTP status is in STATUS)."""

    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    RATE_LIMIT = "rate_limit"
    INTERNAL = "internal"
    UPSTREAM = "upstream"
    TIMEOUT = "timeout"


STATUS = {
    Kind.INVALID_REQUEST: 400,
    Kind.AUTHENTICATION: 401,
    Kind.PERMISSION: 403,
    Kind.NOT_FOUND: 404,
    Kind.TOO_LARGE: 413,
    Kind.RATE_LIMIT: 429,
    Kind.INTERNAL: 500,
    Kind.UPSTREAM: 502,
    Kind.TIMEOUT: 504,
}


class GatewayError(Exception):
    """An error answered to the client in the API's own format.

    ``param`` names the offending request field (OpenAI reports it); ``code`` is a short
    machine-readable reason; ``headers`` go on the response (``Retry-After``).
    """

    def __init__(
        self,
        kind: Kind,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS[self.kind]


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(Kind.INVALID_REQUEST, message, param=param)
