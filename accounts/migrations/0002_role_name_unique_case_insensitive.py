"""Role names are unique whatever their case. Roles that a race already made twice
("RaceRole" and "racerole") keep the oldest name; the later ones get their id appended."""

import django.db.models.functions.text
from django.db import migrations, models


def rename_case_duplicates(apps, schema_editor):
    Role = apps.get_model("accounts", "Role")
    seen = set()
    for role in Role.objects.order_by("pk"):
        key = role.name.lower()
        if key in seen:
            role.name = f"{role.name[:100]}-{role.pk}"
            role.save(update_fields=["name"])
        seen.add(role.name.lower())


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(rename_case_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="role",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("name"), name="role_name_unique_ci"
            ),
        ),
    ]
