"""A cluster's Scheduling Policy (Edit Cluster's Scheduling Policy tab): the policy and its
properties, named as oVirt names them, checked in one place (`scheduling_policy_check`, which
the service calls: a clear message and nothing changed on bad input) and shown on the
cluster's General sub-tab (`scheduling_rows`). What they do: vms/scheduling.py (weights, the
balance_headroom filter, over- and under-utilization) and vms/balancing.py (the balancer)."""

from portal.kernel.errors import ActionRefused

from .choices import SchedulingPolicy
from .models import Cluster

PERCENT_RANGE = (0, 100)
DURATION_RANGE = (1, 99)  # minutes, as oVirt's CpuOverCommitDurationMinutes (two digits)
FREE_MEMORY_RANGE = (0, 16 * 1024 * 1024)  # MB: 16 TiB

# field -> (oVirt's property name, range, unit, required)
PROPERTIES = {
    "high_utilization": ("HighUtilization", PERCENT_RANGE, " %", True),
    "low_utilization": ("LowUtilization", PERCENT_RANGE, " %", True),
    "cpu_overcommit_duration_minutes": (
        "CpuOverCommitDurationMinutes",
        DURATION_RANGE,
        " minutes",
        True,
    ),
    "max_free_memory_for_over_utilized": (
        "MaxFreeMemoryForOverUtilized",
        FREE_MEMORY_RANGE,
        " MB",
        False,
    ),
    "min_free_memory_for_under_utilized": (
        "MinFreeMemoryForUnderUtilized",
        FREE_MEMORY_RANGE,
        " MB",
        False,
    ),
}
SCHEDULING_FIELDS = ("scheduling_policy", *PROPERTIES)

# The properties each policy uses (oVirt's: LowUtilization is power_saving's only).
POLICY_PROPERTIES = {
    SchedulingPolicy.NONE: (),
    SchedulingPolicy.EVENLY_DISTRIBUTED: (
        "high_utilization",
        "cpu_overcommit_duration_minutes",
        "max_free_memory_for_over_utilized",
        "min_free_memory_for_under_utilized",
    ),
    SchedulingPolicy.POWER_SAVING: tuple(PROPERTIES),
}


def _whole(value, name: str, bounds, unit: str) -> int:
    if isinstance(value, bool):
        raise ActionRefused(f"{name} must be a whole number.")
    try:
        number = value if isinstance(value, int) else int(str(value).strip(), 10)
    except ValueError:
        raise ActionRefused(f"{name} must be a whole number.") from None
    low, high = bounds
    if not low <= number <= high:
        raise ActionRefused(f"{name} must be between {low:,} and {high:,}{unit}.")
    return number


def scheduling_policy_check(fields: dict, cluster: Cluster | None = None) -> dict:
    """The typed values of the tab's fields given in `fields` (absent ones keep the
    cluster's): the policy one of none / evenly_distributed / power_saving, the percentages
    0..100 with LowUtilization under HighUtilization, the duration 1..99 minutes, the free
    memory thresholds in MB (empty: not considered) with MaxFreeMemoryForOverUtilized under
    MinFreeMemoryForUnderUtilized. ActionRefused naming the property otherwise."""
    out: dict = {}
    if "scheduling_policy" in fields:
        policy = str(fields["scheduling_policy"] or "").strip()
        if policy not in SchedulingPolicy.values:
            raise ActionRefused(
                "Scheduling Policy must be one of none, evenly_distributed, power_saving."
            )
        out["scheduling_policy"] = policy
    for field, (name, bounds, unit, required) in PROPERTIES.items():
        if field not in fields:
            continue
        value = fields[field]
        if value is None or value == "":
            if required:
                raise ActionRefused(f"{name} is required.")
            out[field] = None
            continue
        out[field] = _whole(value, name, bounds, unit)

    def current(field: str):
        if field in out:
            return out[field]
        return getattr(cluster, field) if cluster is not None else None

    low, high = current("low_utilization"), current("high_utilization")
    if low is not None and high is not None and low >= high:
        raise ActionRefused(f"LowUtilization ({low} %) must be under HighUtilization ({high} %).")
    over = current("max_free_memory_for_over_utilized")
    under = current("min_free_memory_for_under_utilized")
    if over is not None and under is not None and over >= under:
        raise ActionRefused(
            f"MaxFreeMemoryForOverUtilized ({over:,} MB) must be under "
            f"MinFreeMemoryForUnderUtilized ({under:,} MB): a host cannot be over- and "
            "under-utilized at once."
        )
    return out


def scheduling_rows(cluster: Cluster) -> list[tuple[str, str]]:
    """(label, value) of the cluster's Scheduling Policy and the properties it uses, for the
    General sub-tab."""
    policy = cluster.scheduling_policy
    rows = [("Scheduling Policy", SchedulingPolicy(policy).label)]
    for field in POLICY_PROPERTIES[SchedulingPolicy(policy)]:
        name, _bounds, unit, _required = PROPERTIES[field]
        value = getattr(cluster, field)
        rows.append((name, "not considered" if value is None else f"{value:,}{unit}"))
    return rows
