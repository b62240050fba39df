"""Deploy hygiene: check --deploy passes with the documented production settings; the secret key file is 0600;
the admin login locks out after repeated failures."""

import os
import secrets
import stat
import subprocess
import sys

import pytest
from django.contrib.auth.models import User

from tests.conftest import ROOT

# The production settings documented in docs/operations.md ("Deploying").
PRODUCTION_ENV = {
    "DJANGO_ALLOWED_HOSTS": "mgecache.example.org",
    "DJANGO_HTTPS": "true",
    "DJANGO_HSTS_PRELOAD": "true",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}


def _check_deploy(extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "METRICS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mgecache_site.settings",
            "MGECACHE_IGNORE_DOTENV": "1",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            **extra,
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_documented_production_settings():
    proc = _check_deploy(PRODUCTION_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout + proc.stderr


def test_check_deploy_fails_without_https_settings():
    proc = _check_deploy({"DJANGO_ALLOWED_HOSTS": "mgecache.example.org"})
    assert proc.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in proc.stdout + proc.stderr


def test_production_settings_make_cookies_secure_and_trust_the_proxy_header():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SECURE_PROXY_SSL_HEADER, s.METRICS_TOKEN == '')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "METRICS_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "mgecache_site.settings", "MGECACHE_IGNORE_DOTENV": "1"})
    env.update({"DJANGO_SECRET_KEY": "x" * 50, **PRODUCTION_ENV})
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True", "31536000", "('HTTP_X_FORWARDED_PROTO',", "'https')", "True"]


def test_make_writes_the_secret_key_readable_by_its_owner_only(tmp_path):
    target = tmp_path / "var" / "secret_key"
    proc = subprocess.run(
        ["make", "-s", f"SECRET_KEY_FILE={target}", f"PYTHON={sys.executable}", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(target.read_text().strip()) >= 50


@pytest.mark.django_db
def test_admin_login_locks_out_after_repeated_failures(client, settings):
    User.objects.create_superuser("boss", password="the-right-password")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/admin/login/", {"username": "boss", "password": "guess"})
        assert response.status_code == 200  # the form again, with an error
    assert client.post("/admin/login/", {"username": "boss", "password": "guess"}).status_code == 429
    locked = client.post("/admin/login/", {"username": "boss", "password": "the-right-password"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another account from the same address is not locked.
    User.objects.create_superuser("other", password="another-password")
    assert client.post("/admin/login/", {"username": "other", "password": "another-password"}).status_code == 302
