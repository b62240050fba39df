# The roles gain the permissions of the models added since 0004 (audit, shadow records, snapshots).

from django.db import migrations

from cache_app.access.roles import create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("cache_app", "0007_console"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
    ]
