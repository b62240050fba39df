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

from cache_app.access.authentication import get_resolved_keys
from cache_app.core import conf
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
    get_resolved_keys().clear()  # as after API_KEY_CACHE_SECONDS: the key is read again
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


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def resolved_keys():
    from cache_app.access.authentication import ResolvedKeys, get_resolved_keys

    clock = _Clock()
    keys = ResolvedKeys(clock=clock)
    get_resolved_keys.set(keys)
    return keys, clock


def _new_key(user, **fields) -> str:
    _, key = PipelineAPIKey.objects.create_key(name="k", user=user, **fields)
    return key


def test_a_resolved_key_is_reused_without_queries(pipeline_user, resolved_keys, django_assert_num_queries):
    from cache_app.access.authentication import resolve_api_key

    key = _new_key(pipeline_user, restricted=True)
    first = resolve_api_key(key)
    assert first.allowed_masterplans() == frozenset()
    perms = pipeline_user.get_all_permissions()
    assert perms  # the pipeline role's
    with django_assert_num_queries(0):
        again = resolve_api_key(key)
        assert all(again.user.has_perm(perm) for perm in perms)
        assert not again.user.has_perm("cache_app.invalidate_cache")
        assert again.allowed_masterplans() == frozenset()
    assert again is first
    assert len(resolved_keys[0]) == 1


def test_a_key_revoked_elsewhere_stops_working_once_its_entry_expires(pipeline_user, resolved_keys, settings):
    from rest_framework.exceptions import AuthenticationFailed

    from cache_app.access.authentication import resolve_api_key

    _, clock = resolved_keys
    key = _new_key(pipeline_user)
    resolve_api_key(key)
    # Another process revokes it: no signal reaches this one.
    PipelineAPIKey.objects.update(revoked=True)
    resolve_api_key(key)  # still within API_KEY_CACHE_SECONDS
    clock.now += conf.get("API_KEY_CACHE_SECONDS")
    with pytest.raises(AuthenticationFailed):
        resolve_api_key(key)


def test_a_change_in_this_process_applies_at_once(pipeline_user, resolved_keys):
    from rest_framework.exceptions import AuthenticationFailed

    from cache_app.access.authentication import resolve_api_key

    key = _new_key(pipeline_user)
    resolve_api_key(key)
    api_key = PipelineAPIKey.objects.get()
    api_key.revoked = True
    api_key.save()  # the admin's and the command's way: the signal forgets every resolved key
    with pytest.raises(AuthenticationFailed):
        resolve_api_key(key)
    other = _new_key(pipeline_user)
    resolve_api_key(other)
    pipeline_user.groups.clear()  # a role taken away
    assert resolved_keys[0].get(other) is None


def test_an_expired_key_is_refused_even_while_resolved(pipeline_user, resolved_keys):
    from rest_framework.exceptions import AuthenticationFailed

    from cache_app.access.authentication import resolve_api_key

    key = _new_key(pipeline_user, expiry_date=timezone.now() + timedelta(seconds=30))
    resolve_api_key(key)
    PipelineAPIKey.objects.update(expiry_date=timezone.now() - timedelta(seconds=1))
    cached = resolved_keys[0].get(key)
    cached.expiry_date = timezone.now() - timedelta(seconds=1)  # the moment passes for the kept copy too
    with pytest.raises(AuthenticationFailed, match="expired"):
        resolve_api_key(key)


def test_unknown_tokens_are_not_kept_and_zero_seconds_disables_reuse(pipeline_user, resolved_keys, settings):
    from rest_framework.exceptions import AuthenticationFailed

    from cache_app.access.authentication import resolve_api_key

    with pytest.raises(AuthenticationFailed):
        resolve_api_key("nope.nothing")
    assert len(resolved_keys[0]) == 0
    settings.MGECACHE = {**settings.MGECACHE, "API_KEY_CACHE_SECONDS": 0}
    resolve_api_key(_new_key(pipeline_user))
    assert len(resolved_keys[0]) == 0


def test_resolved_keys_are_bounded(pipeline_user):
    from cache_app.access.authentication import ResolvedKeys

    keys = ResolvedKeys(clock=_Clock())
    keys.MAX_ENTRIES = 3
    api_key = PipelineAPIKey(user=pipeline_user)
    for token in "abcd":
        keys.put(token, api_key, 5.0)
    assert len(keys) == 3
    assert keys.get("a") is None
    assert keys.get("d") is api_key
