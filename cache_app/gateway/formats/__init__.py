"""The two wire formats: OpenAI Chat Completions and Anthropic Messages."""

from cache_app.gateway.formats.anthropic import AnthropicFormat
from cache_app.gateway.formats.base import StreamWriter, WireFormat
from cache_app.gateway.formats.openai import OpenAIFormat

__all__ = ["AnthropicFormat", "OpenAIFormat", "StreamWriter", "WireFormat"]
