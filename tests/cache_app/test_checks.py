import pytest

from cache_app.checks import check_mgecache_settings


def ids(settings_value, settings):
    settings.MGECACHE = settings_value
    return sorted(e.id for e in check_mgecache_settings())


def test_defaults_pass(settings):
    assert check_mgecache_settings() == []


@pytest.mark.parametrize(
    ("override", "error_id"),
    [
        ({"NO_SUCH_SETTING": 1}, "cache_app.E002"),
        ({"KEY_PREFIX": "bad prefix*"}, "cache_app.E003"),
        ({"POLICY_REFRESH_SECONDS": 10}, "cache_app.E004"),
        ({"BREAKER_FAILURE_THRESHOLD": 0}, "cache_app.E005"),
        ({"LLM_PROVIDER": "gemini"}, "cache_app.E006"),
        ({"EMBEDDER": "cache_app.rag.embedders.NoSuchEmbedder"}, "cache_app.E007"),
    ],
)
def test_invalid_values_are_reported(settings, override, error_id):
    assert error_id in ids({**settings.MGECACHE, **override}, settings)


def test_not_a_dict(settings):
    assert ids(["KEY_PREFIX"], settings) == ["cache_app.E001"]


def test_pipeline_settings_are_checked(settings):
    from cache_app.checks import check_pipeline_settings

    assert check_pipeline_settings() == []
    settings.MGECACHE = {**settings.MGECACHE, "WAVE_DEADLINE_SECONDS": 0, "IDEMPOTENCY_TTL_SECONDS": "1d"}
    assert sorted(m.id for m in check_pipeline_settings()) == ["cache_app.E060", "cache_app.E061"]
    settings.MGECACHE = {**settings.MGECACHE, "WAVE_DEADLINE_SECONDS": 600, "IDEMPOTENCY_TTL_SECONDS": 86400}
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 270
    assert [m.id for m in check_pipeline_settings()] == ["cache_app.W062"]


@pytest.mark.parametrize(
    ("value", "valid"),
    [(0, True), (5.0, True), (60, True), (-1, False), (61, False), ("5", False), (True, False), (float("nan"), False)],
)
def test_the_wave_store_retry_budget_is_checked(settings, value, valid):
    from cache_app.checks import check_pipeline_settings

    settings.MGECACHE = {**settings.MGECACHE, "WAVE_STORE_RETRY_SECONDS": value}
    assert [m.id for m in check_pipeline_settings()] == ([] if valid else ["cache_app.E063"])


@pytest.mark.parametrize(
    ("nodes", "embedded", "expected"),
    [
        ([], False, []),
        (["10.0.0.1:7000", "10.0.0.2:7000"], False, []),
        (["10.0.0.1"], False, ["cache_app.E100"]),
        ("10.0.0.1:7000", False, ["cache_app.E100"]),
        (["10.0.0.1:7000"], True, ["cache_app.E101"]),
    ],
)
def test_redis_cluster_nodes_are_checked(settings, nodes, embedded, expected):
    from cache_app.checks import check_redis_cluster_settings

    settings.MGECACHE = {**settings.MGECACHE, "REDIS_CLUSTER_NODES": nodes}
    settings.REDIS_EMBEDDED = embedded
    assert [e.id for e in check_redis_cluster_settings()] == expected
