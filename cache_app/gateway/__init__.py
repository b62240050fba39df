"""OpenAI- and Anthropic-compatible endpoints on top of :class:`~cache_app.llm.client.LLMClient`.

``POST /v1/chat/completions`` and ``POST /v1/messages`` accept what the official SDKs send
and answer in their shapes (JSON, or server-sent events with ``stream: true``), so an
existing client gets mgecache's caching, single-flight, fail-open and pricing by changing
only its base URL. See docs/gateway.md.

Modules: ``errors`` (one error type, rendered in each API's shape), ``auth`` (the caller and
its masterplan scope, the throttle), ``conversation`` (a request's canonical form and cache
identity), ``formats`` (the two wire formats), ``service`` (one call into the client),
``streaming`` (the bridge from the client's event loop to a WSGI response), ``views``.
"""
