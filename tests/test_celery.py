import pytest

from mgecache_site.celery import app, ping


@pytest.mark.redis_server
@pytest.mark.celery_worker
def test_real_worker_runs_ping(celery_worker):
    result = ping.apply_async(queue=celery_worker)
    assert result.get(timeout=30) == "pong"


def test_celery_is_json_only_and_acks_late():
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late is True
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility > app.conf.task_time_limit
