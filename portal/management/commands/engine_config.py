"""`manage.py engine_config`: list, get and set the engine's settings, like oVirt's engine-config."""

from django.core.management.base import BaseCommand, CommandError

from portal.kernel.config import KEYS, config_get, config_key, config_rows, config_set
from portal.kernel.errors import ActionRefused


class Command(BaseCommand):
    help = (
        "Engine configuration: -l lists the keys, -g KEY prints one value, -s KEY=VALUE sets "
        "one (checked, recorded as an Event, read by the monitor and workers within a second)."
    )

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("-l", "--list", action="store_true", help="list keys and descriptions")
        group.add_argument("-g", "--get", metavar="KEY", help="print the value of KEY")
        group.add_argument("-s", "--set", metavar="KEY=VALUE", help="set KEY to VALUE")

    def handle(self, *args, list=False, get=None, set=None, **options):
        try:
            if list:
                self._list()
            elif get is not None:
                key = config_key(get)
                self.stdout.write(f"{key.name}: {key.show(config_get(key.name))}")
            else:
                name, sep, value = set.partition("=")
                if not sep:
                    raise ActionRefused(f"-s takes KEY=VALUE, not {set[:60]!r}.")
                key = config_key(name)
                typed = config_set(key.name, value, user=None)
                self.stdout.write(f"{key.name} set to {key.show(typed)}.")
        except ActionRefused as exc:
            raise CommandError(str(exc)) from None

    def _list(self) -> None:
        width = max(len(name) for name in KEYS)
        for row in config_rows():
            key = row["key"]
            self.stdout.write(
                f"{key.name:{width}}  {row['shown']}"
                f"{'' if row['is_set'] else ' (default)'}\n{'':{width}}  {key.description} "
                f"Accepts {key.accepts()}; default {row['default']}."
            )
