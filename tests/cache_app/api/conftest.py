import pytest
from rest_framework.test import APIClient


@pytest.fixture
def api(admin_user, settings) -> APIClient:
    """An admin session on the v2 API; the simulated provider without its modelled latency."""
    settings.MGECACHE = {
        **settings.MGECACHE,
        "SIMULATED_CALL_OVERHEAD_SECONDS": 0.0,
        "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.0,
    }
    client = APIClient()
    client.force_authenticate(admin_user)
    return client
