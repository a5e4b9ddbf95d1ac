"""engine-config: the engine's typed settings, changed without a restart.

Every key is declared once in `KEYS` (name as oVirt's engine-config spells it, type, bounds or
choices, default, description). A value set by an administrator is one row of `ConfigValue`;
a key without a row has its default. `config_get` reads from a per-process copy of the table
that is at most `CONFIG_TTL_SECONDS` old, so the monitor, workers and web processes see a
change within that bound without a restart and a read costs a dictionary lookup.
`config_set` validates (a clear message, nothing changed on bad input) and records an Event.
"""

import time
from dataclasses import dataclass, field

from django.db import transaction

from .audit import actor, event_record
from .errors import ActionRefused
from .models import ConfigValue, Phase

CONFIG_TTL_SECONDS = 1.0


@dataclass(frozen=True)
class ConfigKey:
    """One engine-config key: `kind` is "bool", "int" (within `minimum`..`maximum`) or "enum"
    (one of `choices`, (value, label) pairs)."""

    name: str
    kind: str
    default: object
    description: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[tuple[str, str], ...] = ()
    unit: str = ""
    labels: dict = field(default_factory=dict, compare=False, repr=False)

    def parse(self, value) -> object:
        """The typed value of `value` (text from a command line or a form, or already typed);
        ActionRefused naming the key and what it accepts."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ActionRefused(f"{self.name} must be true or false, not {_shown(value)}.")
        if self.kind == "int":
            if isinstance(value, bool):
                raise ActionRefused(f"{self.name} must be a whole number, not {_shown(value)}.")
            try:
                number = value if isinstance(value, int) else int(str(value).strip(), 10)
            except ValueError:
                raise ActionRefused(
                    f"{self.name} must be a whole number, not {_shown(value)}."
                ) from None
            if not self.minimum <= number <= self.maximum:
                raise ActionRefused(
                    f"{self.name} must be between {self.minimum} and {self.maximum}"
                    f"{' ' + self.unit if self.unit else ''}, not {number}."
                )
            return number
        text = str(value).strip()
        values = [v for v, _label in self.choices]
        for v, label in self.choices:
            if text.lower() in (v.lower(), label.lower()):
                return v
        raise ActionRefused(f"{self.name} must be one of {', '.join(values)}, not {_shown(value)}.")

    def accepts(self) -> str:
        """What the key accepts, in words (engine-config -l, the Configure page)."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "int":
            return f"{self.minimum}..{self.maximum}{' ' + self.unit if self.unit else ''}"
        return ", ".join(f"{v} ({label})" for v, label in self.choices)

    def show(self, value) -> str:
        """A value as the Configure page and `-g` print it."""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "enum":
            return dict(self.choices).get(value, str(value))
        return f"{value}{' ' + self.unit if self.unit else ''}"


def _shown(value) -> str:
    return repr(str(value)[:40])


MIGRATION_POLICIES = (
    ("legacy", "Legacy"),
    ("minimal_downtime", "Minimal downtime"),
    ("post_copy", "Post-copy migration"),
    ("suspend_workload", "Suspend workload if needed"),
)
MIGRATION_COMPRESSION = (
    ("none", "None"),
    ("xbzrle", "XBZRLE"),
    ("mt", "Multithreaded compression"),
)
MIGRATION_BANDWIDTH = (
    ("auto", "Auto"),
    ("hypervisor_default", "Hypervisor default"),
    ("custom", "Custom"),
)

KEYS: dict[str, ConfigKey] = {
    k.name: k
    for k in (
        ConfigKey(
            "MigrationPolicy",
            "enum",
            "minimal_downtime",
            "The migration policy of a migration that names none: how downtime and "
            "convergence are traded off.",
            choices=MIGRATION_POLICIES,
        ),
        ConfigKey(
            "DefaultMaximumMigrationDowntime",
            "int",
            500,
            "The longest pause of the guest at the end of a live migration.",
            minimum=10,
            maximum=60000,
            unit="ms",
        ),
        ConfigKey(
            "AutoConvergence",
            "bool",
            False,
            "Throttle the guest's vCPUs when a live migration does not converge.",
        ),
        ConfigKey(
            "MigrationCompression",
            "enum",
            "none",
            "Compress memory pages sent during migration (used where the host's libvirt "
            "supports it).",
            choices=MIGRATION_COMPRESSION,
        ),
        ConfigKey(
            "MigrationBandwidth",
            "enum",
            "auto",
            "Bandwidth limit of a migration: Auto (from the hosts' links), the hypervisor's "
            "default, or MigrationBandwidthCustomMbps.",
            choices=MIGRATION_BANDWIDTH,
        ),
        ConfigKey(
            "MigrationBandwidthCustomMbps",
            "int",
            1000,
            "Bandwidth limit of one migration when MigrationBandwidth is Custom.",
            minimum=1,
            maximum=100000,
            unit="Mbps",
        ),
        ConfigKey(
            "MaxNumberOfConcurrentMigrations",
            "int",
            2,
            "The most migrations running at once out of one host; more wait in the queue.",
            minimum=1,
            maximum=32,
        ),
        ConfigKey(
            "MaxNumOfTriesToRunFailedAutoStartVm",
            "int",
            10,
            "How many times the HA watcher tries to restart a Highly Available VM before it "
            "gives up.",
            minimum=1,
            maximum=100,
        ),
        ConfigKey(
            "RetryToRunAutoStartVmIntervalInSeconds",
            "int",
            30,
            "The wait before the HA watcher tries a failed restart again; it doubles after "
            "each failed try, up to 10 minutes.",
            minimum=1,
            maximum=3600,
            unit="s",
        ),
        ConfigKey(
            "EnableHostTimeDrift",
            "bool",
            False,
            "Alert when a host's clock drifts from the engine's by more than HostTimeDriftInSec.",
        ),
        ConfigKey(
            "HostTimeDriftInSec",
            "int",
            300,
            "The clock difference between a host and the engine that raises a time-drift alert.",
            minimum=1,
            maximum=86400,
            unit="s",
        ),
    )
}


class _Snapshot:
    """This process's copy of the stored values and when it must be read again."""

    values: dict[str, object] = {}
    expires: float = 0.0


_clock = time.monotonic


def config_key(name: str) -> ConfigKey:
    """The declared key of that name (exact spelling, as engine-config), or ActionRefused."""
    key = KEYS.get(str(name).strip())
    if key is None:
        raise ActionRefused(
            f"Unknown engine-config key {_shown(name)}; `engine_config -l` lists the keys."
        )
    return key


def _stored() -> dict[str, object]:
    now = _clock()
    if now >= _Snapshot.expires:
        _Snapshot.values = dict(ConfigValue.objects.values_list("key", "value"))
        _Snapshot.expires = now + CONFIG_TTL_SECONDS
    return _Snapshot.values


def config_reset_cache() -> None:
    """Forget this process's copy: the next read goes to the database."""
    _Snapshot.expires = 0.0


def config_get(name: str) -> object:
    """The typed value of a key: what was set (seen by every process within
    CONFIG_TTL_SECONDS), else its default. A stored value the declaration no longer accepts
    (a bound narrowed since) reads as the default."""
    key = config_key(name)
    stored = _stored()
    if key.name not in stored:
        return key.default
    try:
        return key.parse(stored[key.name])
    except ActionRefused:
        return key.default


def config_rows() -> list[dict]:
    """Every key with its value, default and whether it was set (engine-config -l, the
    Configure page), read fresh from the database."""
    config_reset_cache()
    stored = _stored()
    rows = []
    for key in KEYS.values():
        value = config_get(key.name)
        rows.append(
            {
                "key": key,
                "value": value,
                "shown": key.show(value),
                "default": key.show(key.default),
                "is_set": key.name in stored,
            }
        )
    return rows


def config_set(name: str, value, *, user=None) -> object:
    """Set a key to `value` (text or typed), checked against its declaration; records an
    Event and returns the typed value. Bad input changes nothing."""
    key = config_key(name)
    typed = key.parse(value)
    with transaction.atomic():
        before = config_get_fresh(key.name)
        ConfigValue.objects.update_or_create(
            key=key.name, defaults={"value": typed, "updated_by": _account(user)}
        )
        event_record(
            action="engine_config_set",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="config",
            object_name=key.name,
            message=(
                f"{actor(user)} set engine-config {key.name} to {key.show(typed)} "
                f"(was {key.show(before)})."
            ),
        )
    config_reset_cache()
    return typed


def config_get_fresh(name: str) -> object:
    """A key's value read from the database now (for a write that reports the previous one)."""
    config_reset_cache()
    return config_get(name)


def _account(user):
    return user if user is not None and user.is_authenticated else None
