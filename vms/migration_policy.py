"""Migration policies, inherited: engine-config's migration defaults (the bottom level) are
overridden by the cluster's Migration Policy tab, which the VM's Host tab overrides in turn.
At each level an empty value (None for the switches and numbers) says "inherit".

`effective_migration_settings(vm)` is the one place that resolves them: the Migrate job's
libvirt options (`vms.migration.migration_options`) and the VM's General sub-tab read it. The
checks of what Edit Cluster and Edit VM post are here too, so both windows refuse the same
bad input with the same words.
"""

from dataclasses import dataclass

from portal.kernel.config import (
    KEYS,
    MIGRATION_BANDWIDTH,
    MIGRATION_COMPRESSION,
    MIGRATION_POLICIES,
    config_get,
)
from portal.kernel.errors import ActionRefused

from .choices import MigrationMode, VMStatus
from .models import Cluster, VirtualMachine

GLOBAL = "global (engine-config)"
DOWNTIME_RANGE = (1, 60000)  # ms, the VM's custom migration downtime
_MBPS = KEYS["MigrationBandwidthCustomMbps"]
BANDWIDTH_RANGE = (_MBPS.minimum, _MBPS.maximum)  # Mbps, as engine-config's own key


@dataclass(frozen=True)
class Setting:
    """One inheritable setting: its field on Cluster / VirtualMachine, its engine-config key
    and how it reads in the General sub-tab."""

    name: str
    field: str | None  # None: the VM-only setting (downtime); the cluster does not set it
    key: str
    label: str
    choices: tuple = ()


SETTINGS = (
    Setting(
        "policy", "migration_policy", "MigrationPolicy", "Migration Policy", MIGRATION_POLICIES
    ),
    Setting("auto_converge", "auto_converge", "AutoConvergence", "Auto Converge"),
    Setting(
        "compression",
        "migration_compression",
        "MigrationCompression",
        "Migration compression",
        MIGRATION_COMPRESSION,
    ),
    Setting(
        "bandwidth",
        "migration_bandwidth",
        "MigrationBandwidth",
        "Migration bandwidth",
        MIGRATION_BANDWIDTH,
    ),
    Setting("downtime", None, "DefaultMaximumMigrationDowntime", "Maximum downtime"),
)


def _unset(value) -> bool:
    return value is None or value == ""


def effective_migration_settings(vm: VirtualMachine) -> dict[str, tuple[object, str]]:
    """Each migration setting of `vm` as its next migration uses it, with where it came from:
    name -> (value, source), source "VM", "cluster <name>" or "global (engine-config)".
    `bandwidth_mbps` follows the level that chose Custom bandwidth."""
    cluster = vm.cluster
    levels = (("VM", vm), (f"cluster {cluster.name}", cluster))
    out: dict[str, tuple[object, str]] = {}
    for setting in SETTINGS:
        if setting.field is None:  # downtime: the VM's, else engine-config's
            if vm.custom_migration_downtime is not None:
                out[setting.name] = (vm.custom_migration_downtime, "VM")
            else:
                out[setting.name] = (int(config_get(setting.key)), GLOBAL)
            continue
        for source, obj in levels:
            value = getattr(obj, setting.field)
            if not _unset(value):
                out[setting.name] = (value, source)
                break
        else:
            value = config_get(setting.key)
            out[setting.name] = (bool(value) if setting.name == "auto_converge" else value, GLOBAL)
    bandwidth, source = out["bandwidth"]
    mbps = None
    if bandwidth == "custom":
        obj = dict(levels).get(source)
        mbps = obj.migration_bandwidth_mbps if obj is not None else None
        if mbps is None:
            mbps = int(config_get("MigrationBandwidthCustomMbps"))
    out["bandwidth_mbps"] = (mbps, source)
    return out


def migration_rows(settings: dict[str, tuple[object, str]]) -> list[tuple[str, str, str]]:
    """(label, value as read, source) rows of the General sub-tab's Migration block."""
    rows = []
    for setting in SETTINGS:
        value, source = settings[setting.name]
        if setting.choices:
            text = dict(setting.choices).get(value, str(value))
            if setting.name == "bandwidth" and value == "custom":
                text = f"{settings['bandwidth_mbps'][0]} Mbps"
        elif setting.name == "auto_converge":
            text = "Yes" if value else "No"
        else:
            text = f"{value} ms"
        rows.append((setting.label, text, source.split(" (")[0]))
    return rows


def policy_fields_check(values: dict, *, level: str) -> dict:
    """The migration fields Edit Cluster (`level` "cluster") or Edit VM ("vm") posted, checked:
    the model's field values; ActionRefused (nothing changes) on a bad one. Keys absent from
    `values` are left out (unchanged)."""
    out: dict = {}
    for setting in SETTINGS:
        if setting.field is None or setting.field not in values:
            continue
        value = values[setting.field]
        if setting.name == "auto_converge":
            if value not in (None, True, False):
                raise ActionRefused("Choose Auto Converge from the list.")
        elif _unset(value):
            value = ""
        elif value not in dict(setting.choices):
            raise ActionRefused(f"Choose a {setting.label} from the list.")
        out[setting.field] = value
    if "migration_bandwidth_mbps" in values:
        mbps = values["migration_bandwidth_mbps"]
        bandwidth = out.get("migration_bandwidth", values.get("migration_bandwidth"))
        if bandwidth != "custom":
            mbps = None
        elif mbps is None:
            raise ActionRefused("Custom migration bandwidth needs a value in Mbps.")
        else:
            mbps = _in_range(mbps, BANDWIDTH_RANGE, "Custom migration bandwidth", " Mbps")
        out["migration_bandwidth_mbps"] = mbps
    if level == "vm" and "custom_migration_downtime" in values:
        downtime = values["custom_migration_downtime"]
        if downtime is not None:
            downtime = _in_range(downtime, DOWNTIME_RANGE, "Migration downtime", " ms")
        out["custom_migration_downtime"] = downtime
    return out


def _in_range(value, bounds: tuple[int, int], label: str, unit: str) -> int:
    low, high = bounds
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ActionRefused(f"{label} must be a whole number.") from None
    if not low <= number <= high:
        raise ActionRefused(f"{label} must be between {low} and {high}{unit}.")
    return number


def cluster_policy_fields(cluster: Cluster) -> dict:
    """The Migration Policy tab's initial values."""
    return {
        "migration_policy": cluster.migration_policy,
        "auto_converge": cluster.auto_converge,
        "migration_compression": cluster.migration_compression,
        "migration_bandwidth": cluster.migration_bandwidth,
        "migration_bandwidth_mbps": cluster.migration_bandwidth_mbps,
    }


def vm_migration_fields_check(vm: VirtualMachine, values: dict) -> dict:
    """Edit VM's migration fields, checked against the (locked) `vm`: the inheritable policy
    fields, the custom downtime, Migration mode and Pass-Through Host CPU (only while Down:
    the guest gets it at its next start; it needs Migration mode "Do not allow migration").
    Keys absent from `values` are unchanged; ActionRefused changes nothing."""
    out = policy_fields_check(values, level="vm")
    mode = values.get("migration_mode", vm.migration_mode)
    if mode not in MigrationMode.values:
        raise ActionRefused("Choose a Migration mode from the list.")
    if "migration_mode" in values:
        out["migration_mode"] = mode
    passthrough = bool(values.get("cpu_passthrough", vm.cpu_passthrough))
    if passthrough != vm.cpu_passthrough:
        if vm.status != VMStatus.DOWN:
            raise ActionRefused(
                f"Pass-Through Host CPU of {vm.name} can be changed only while it is Down."
            )
        out["cpu_passthrough"] = passthrough
    if passthrough and mode != MigrationMode.PINNED:
        raise ActionRefused(
            f"{vm.name} passes the host CPU through, so it cannot migrate: set Migration mode "
            f'to "{MigrationMode.PINNED.label}".'
        )
    return out


VM_FIELDS = (
    "migration_mode",
    "migration_policy",
    "auto_converge",
    "migration_compression",
    "migration_bandwidth",
    "migration_bandwidth_mbps",
    "custom_migration_downtime",
    "cpu_passthrough",
)


def vm_migration_copy(vm: VirtualMachine) -> dict:
    """A VM's migration settings, for its clone."""
    return {name: getattr(vm, name) for name in VM_FIELDS}
