"""API keys: hashed at rest, shown once, expiring, revocable, last-used-stamped, managed in the admin and by command."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from cache_app.models import Masterplan, PipelineAPIKey

pytestmark = pytest.mark.django_db

MP = uuid.UUID("66666666-6666-4666-8666-666666666666")


def _bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def _stats(client, masterplan_id=MP):
    return client.get("/api/v2/cache/statistics", {"masterplan_id": str(masterplan_id)})


@pytest.fixture
def pipeline_user(roles):
    user = User.objects.create_user("pipeline-bot")
    user.groups.add(Group.objects.get(name="pipeline"))
    return user


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash(pipeline_user, capsys):
    call_command("create_api_key", "--user", "pipeline-bot", "--name", "ci")
    out, err = capsys.readouterr()
    key = out.strip()
    assert "shown only once" in err
    assert key not in err
    api_key = PipelineAPIKey.objects.get()
    assert (api_key.name, api_key.user, api_key.restricted) == ("ci", pipeline_user, False)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {PipelineAPIKey._meta.db_table}")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert key not in stored
    secret = key.split(".", 1)[1]
    assert secret not in stored
    assert api_key.hashed_key.startswith("sha512$$")
    assert _stats(_bearer(key)).status_code == 200


def test_create_api_key_restricts_to_masterplans_and_sets_an_expiry(pipeline_user, capsys):
    call_command("create_api_key", "--user", "pipeline-bot", "--masterplan", str(MP), "--expires-days", "7")
    key = capsys.readouterr().out.strip()
    api_key = PipelineAPIKey.objects.get()
    assert api_key.restricted is True
    assert api_key.allowed_masterplans() == {str(MP)}
    assert Masterplan.objects.get(pk=MP).name == str(MP)  # registered, named by its id
    assert timedelta(days=6) < api_key.expiry_date - timezone.now() <= timedelta(days=7)
    assert _stats(_bearer(key)).status_code == 200
    assert _stats(_bearer(key), uuid.uuid4()).status_code == 403


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody"], "No active user"),
        (["--user", "pipeline-bot", "--masterplan", "mp-1"], "UUID"),
        (["--user", "pipeline-bot", "--expires-days", "0"], "between"),
    ],
)
def test_create_api_key_rejects_bad_input(pipeline_user, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_api_key", *args)
    assert not PipelineAPIKey.objects.exists()


@pytest.mark.parametrize(
    "header",
    ["Bearer nope", "Bearer abc.def", "Bearer " + "x" * 500, "Token 0123456789abcdef0123456789abcdef01234567"],
)
def test_unknown_keys_and_plain_tokens_are_refused(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = _stats(client)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_expired_revoked_and_inactive_keys_are_refused(make_caller):
    caller = make_caller("pipeline")
    assert _stats(caller).status_code == 200
    caller.api_key.expiry_date = timezone.now() - timedelta(seconds=1)
    caller.api_key.save()
    assert _stats(caller).status_code == 401

    revoked = make_caller("pipeline")
    revoked.api_key.revoked = True
    revoked.api_key.save()
    assert _stats(revoked).status_code == 401

    inactive = make_caller("pipeline")
    inactive.user.is_active = False
    inactive.user.save()
    assert _stats(inactive).status_code == 401


def test_use_stamps_last_used_at_at_most_once_per_period(make_caller, settings):
    caller = make_caller("pipeline")
    assert caller.api_key.last_used_at is None
    _stats(caller)
    caller.api_key.refresh_from_db()
    first = caller.api_key.last_used_at
    assert first is not None
    _stats(caller)
    caller.api_key.refresh_from_db()
    assert caller.api_key.last_used_at == first  # within the 60 s resolution: no write
    settings.MGECACHE = {**settings.MGECACHE, "API_KEY_LAST_USED_RESOLUTION_SECONDS": 1}
    PipelineAPIKey.objects.filter(pk=caller.api_key.pk).update(last_used_at=first - timedelta(seconds=5))
    _stats(caller)
    caller.api_key.refresh_from_db()
    assert caller.api_key.last_used_at > first - timedelta(seconds=5)


def test_a_key_has_its_users_role(make_caller):
    operator = make_caller("operator")
    assert operator.post("/api/v2/llm/generate", {"prompt": "x"}, format="json").status_code == 403
    body = {"masterplan_id": str(MP)}
    assert operator.post("/api/v2/cache/invalidate", body, format="json").status_code == 202


def test_admin_creates_a_key_and_shows_it_once(admin_client, pipeline_user):
    response = admin_client.post(
        reverse("admin:cache_app_pipelineapikey_add"),
        {"name": "from the admin", "user": pipeline_user.pk, "masterplans": []},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    [shown] = [m for m in messages if "The API key for from the admin is:" in m]
    key = shown.split("is: ")[1].split(". ")[0]
    assert _stats(_bearer(key)).status_code == 200
    page = admin_client.get(reverse("admin:cache_app_pipelineapikey_changelist"))
    assert key.encode() not in page.content


def test_admin_revoke_action_stops_a_key(admin_client, make_caller):
    caller = make_caller("pipeline")
    url = reverse("admin:cache_app_pipelineapikey_changelist")
    response = admin_client.post(url, {"action": "revoke", "_selected_action": [caller.api_key.pk]})
    assert response.status_code == 302
    assert _stats(caller).status_code == 401


def test_authtoken_is_gone():
    from django.apps import apps

    assert not apps.is_installed("rest_framework.authtoken")
