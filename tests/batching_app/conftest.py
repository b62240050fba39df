import pytest

from cache_app.llm import client as client_module
from tests.batching_app.fakes import RecordingProvider


@pytest.fixture
def provider(monkeypatch) -> RecordingProvider:
    """Every LLMClient of this process answers through a recording, latency-free simulated provider."""
    recording = RecordingProvider()
    monkeypatch.setattr(client_module, "get_provider", lambda: recording)
    return recording
