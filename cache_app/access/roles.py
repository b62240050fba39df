"""The three roles, as Django groups with permissions (created by migration 0004_access_control).

* ``pipeline``: generate, retrieve, run waves, and read the statistics of the masterplans
  its key may use (``cache_app.use_pipeline``).
* ``operator``: invalidate, tune policies, read all statistics; in the admin it may view
  masterplans, documents and prices, rename masterplans and edit policies.
* ``admin``: everything in mgecache, plus users, groups, API keys and login lockouts (axes).

A user's role is the group(s) it is in; superusers have every permission. Operators and
admins who use the admin site also need ``is_staff``.
"""

from __future__ import annotations

from typing import Any

PIPELINE = "pipeline"
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (PIPELINE, OPERATOR, ADMIN)

USE_PIPELINE = "cache_app.use_pipeline"
INVALIDATE_CACHE = "cache_app.invalidate_cache"
TUNE_POLICY = "cache_app.tune_policy"
VIEW_ALL_STATISTICS = "cache_app.view_all_statistics"

# Permission codenames per role, as "app_label.codename".
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    PIPELINE: (USE_PIPELINE,),
    OPERATOR: (
        INVALIDATE_CACHE,
        TUNE_POLICY,
        VIEW_ALL_STATISTICS,
        "cache_app.view_masterplan",
        "cache_app.change_masterplan",
        "cache_app.view_cachepolicy",
        "cache_app.change_cachepolicy",
        "cache_app.view_batchpolicy",
        "cache_app.change_batchpolicy",
        "cache_app.view_modelpricing",
        "cache_app.view_document",
        # The operator console: the dashboard's snapshots, the audit trail, shadow-mode records.
        "cache_app.view_statssnapshot",
        "cache_app.view_invalidationaudit",
        "cache_app.view_policychangeaudit",
        "cache_app.view_similarityshadowrecord",
    ),
}
# The admin role: every permission of these apps (users and groups; axes: login lockouts).
ADMIN_APPS = ("cache_app", "auth", "axes")


def create_roles(apps: Any, schema_editor: Any = None) -> None:
    """Create (or complete) the role groups. Idempotent; run by migrations 0004 and 0008 (new models)."""
    _create_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        for name in names:
            app_label, codename = name.split(".", 1)
            # A model added by a later migration has no permission yet: that migration runs this again.
            permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is not None:
                group.permissions.add(permission)
    admin, _ = Group.objects.get_or_create(name=ADMIN)
    admin.permissions.add(*Permission.objects.filter(content_type__app_label__in=ADMIN_APPS))


def _create_permissions(apps: Any) -> None:
    """Model permissions are normally created after all migrations (post_migrate): make them now."""
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        if apps is global_apps:
            if app_config.models_module is not None:
                create_permissions(app_config, apps=apps, verbosity=0)
            continue
        # A migration's historical app configs have no models module; the check only needs one.
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
