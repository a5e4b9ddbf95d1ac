"""Indexes for the search box: `memory > 2048` (memory_mb), and on PostgreSQL a pattern index
on UPPER(name), which answers `name = web*` (istartswith) and `name = web1` (iexact) without a
scan of every VM whatever the database's collation. SQLite (the demo) scans; it is small."""

from django.db import migrations, models

NAME_INDEX = "vm_name_upper_pattern"


def name_index_create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {NAME_INDEX} ON vms_virtualmachine "
            "(UPPER(name::text) text_pattern_ops)"
        )


def name_index_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {NAME_INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0005_vm_last_known_status"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="virtualmachine",
            index=models.Index(fields=["memory_mb"], name="vm_memory_idx"),
        ),
        migrations.RunPython(name_index_create, name_index_drop),
    ]
