import pytest


@pytest.fixture(autouse=True)
def _fast_simulated_provider(settings):
    """The simulated provider without its modelled latency."""
    settings.MGECACHE = {
        **settings.MGECACHE,
        "SIMULATED_CALL_OVERHEAD_SECONDS": 0.0,
        "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.0,
    }
