"""The foundation: endpoints, admin pages, settings validation, migrations."""

import os
import subprocess
import sys

import pytest
import redis as redis_lib
from django.core.management import call_command
from django.urls import reverse

from cache_app import health
from cache_app.models import BatchPolicy, CachePolicy, Document, Masterplan, ModelPricing
from tests.conftest import ROOT


@pytest.mark.django_db
def test_healthz_ok(admin_client):
    response = admin_client.get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "broker"}
    assert body["llm_provider_simulated"] is (body["llm_provider"] == "simulated")


@pytest.mark.django_db
def test_healthz_503_names_redis_when_unreachable(admin_client, monkeypatch, blackhole_port):
    dead = redis_lib.Redis(host="127.0.0.1", port=blackhole_port, socket_timeout=0.1, socket_connect_timeout=0.1)
    monkeypatch.setattr(health, "get_redis", lambda: dead)
    response = admin_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"]["ok"] is False


@pytest.mark.django_db
def test_metrics_endpoint_exports_django_and_mgecache_metrics(client, settings):
    settings.METRICS_TOKEN = "scrape-token-for-tests"
    client.get("/healthz")
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-for-tests")
    assert response.status_code == 200
    text = response.content.decode()
    assert "django_http_requests_total_by_method_total" in text
    assert "mgecache_cache_hits_total" in text or "mgecache_batch_size" in text


@pytest.mark.django_db
def test_openapi_schema_and_docs(admin_client):
    assert admin_client.get("/api/schema/").status_code == 200
    docs = admin_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn.jsdelivr" not in docs.content  # Swagger UI is served locally (works offline)


ADMIN_MODELS = [Masterplan, CachePolicy, BatchPolicy, ModelPricing, Document]


@pytest.mark.django_db
@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_admin_changelist_loads(admin_client, model):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    assert admin_client.get(url).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("model", [Masterplan, CachePolicy, ModelPricing, Document], ids=lambda m: m.__name__)
def test_admin_add_page_loads(admin_client, model):
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
    assert admin_client.get(url).status_code == 200


@pytest.mark.django_db
def test_admin_refuses_out_of_range_ttl_with_form_error(admin_client):
    policy = CachePolicy.objects.get(layer="llm")
    url = reverse("admin:cache_app_cachepolicy_change", args=[policy.pk])
    response = admin_client.post(
        url,
        {
            "layer": "llm",
            "enabled": "on",
            "ttl_seconds": "0",
            "notes": "",
            "similarity_threshold": "0.95",
            "cache_nonzero_temperature": "on",
        },
    )
    assert response.status_code == 200  # the form is shown again, with errors
    assert "ttl_seconds" in response.context["adminform"].form.errors
    policy.refresh_from_db()
    assert policy.ttl_seconds == 86400


@pytest.mark.django_db
def test_admin_saves_valid_policy(admin_client):
    policy = BatchPolicy.objects.get(pk=1)
    url = reverse("admin:cache_app_batchpolicy_change", args=[policy.pk])
    response = admin_client.post(url, {"enabled": "on", "max_batch_size": "7", "batch_window_ms": "250", "notes": ""})
    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.max_batch_size, policy.batch_window_ms) == (7, 250)


@pytest.mark.django_db
def test_migrations_are_complete():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_pricing_seed_has_claude_and_four_more():
    # Read from the migration, which is what a fresh database gets.
    from importlib import import_module

    prices = import_module("cache_app.migrations.0002_seed_defaults").PRICES
    by_model = {row[0]: row for row in prices}
    assert by_model["claude-3-5-sonnet"][2:4] == ("3.00", "15.00")
    assert len(prices) >= 5
    assert {row[1] for row in prices} == {"anthropic", "openai"}
    assert all(row[4] for row in prices), "each price needs a source note"


@pytest.mark.django_db
def test_ensure_admin_generates_password_once(capsys, monkeypatch):
    from django.contrib.auth import get_user_model

    for name in ("DJANGO_SUPERUSER_USERNAME", "DJANGO_SUPERUSER_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    call_command("ensure_admin")
    first = capsys.readouterr().out
    assert "password:" in first
    password = first.split("password:")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)
    call_command("ensure_admin")
    assert "already exists" in capsys.readouterr().out


def _django_setup_with(env_overrides: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_"))}
    env["MGECACHE_IGNORE_DOTENV"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = "mgecache_site.settings"
    env.update({k: v for k, v in env_overrides.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({}, "DJANGO_SECRET_KEY"),
        ({"DJANGO_SECRET_KEY": "x" * 50}, "DJANGO_ALLOWED_HOSTS"),
        ({"DJANGO_DEBUG": "perhaps"}, "DJANGO_DEBUG"),
        ({"DJANGO_DEBUG": "true", "REDIS_SOCKET_TIMEOUT": "fast"}, "REDIS_SOCKET_TIMEOUT"),
        ({"DJANGO_DEBUG": "true", "LLM_MAX_RETRIES": "two"}, "LLM_MAX_RETRIES"),
        ({"DJANGO_DEBUG": "true", "DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        (
            {"DJANGO_DEBUG": "true", "REDIS_URL": "redis://h:6379/3", "CELERY_BROKER_URL": "redis://h:6379/3"},
            "CELERY_BROKER_URL",
        ),
    ],
)
def test_bad_production_settings_stop_startup_naming_the_variable(overrides, variable):
    proc = _django_setup_with(overrides)
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr
    assert variable in proc.stderr.strip().splitlines()[-1]


def test_good_production_settings_start():
    proc = _django_setup_with({"DJANGO_SECRET_KEY": "x" * 50, "DJANGO_ALLOWED_HOSTS": "example.org"})
    assert proc.returncode == 0, proc.stderr


def test_broker_defaults_to_next_database_on_cache_server():
    code = "from django.conf import settings; print(settings.CELERY_BROKER_URL)"
    env = {"DJANGO_DEBUG": "true", "REDIS_URL": "redis://cachehost:6379/4"}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CELERY_"))}
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup();" + code],
        env={**base, **env, "DJANGO_SETTINGS_MODULE": "mgecache_site.settings", "MGECACHE_IGNORE_DOTENV": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "redis://cachehost:6379/5"


@pytest.mark.django_db
def test_admin_document_is_embedded_on_save(admin_client):
    from cache_app.rag.embedders import load_embedder

    response = admin_client.post(
        reverse("admin:cache_app_document_add"), {"content": "Redis SCAN uses a cursor.", "metadata": "{}"}
    )
    assert response.status_code == 302, response.content
    document = Document.objects.get()
    embedder = load_embedder()
    assert document.embedding_model == embedder.model_name
    assert document.get_embedding().shape == (embedder.dim,)
