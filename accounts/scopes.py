"""Where permissions are inherited from: for each kind of object, the objects above it.

system > data center > cluster > VM (and host); data center > storage domain, logical
network > vNIC profile, template. Each entry is (model of the ancestor, path from the object
to its id), None for the System singleton.
"""

from functools import cache

from django.apps import apps


def _m(label: str):
    return apps.get_model(label)


@cache
def scope_paths(model) -> tuple[tuple[type, str | None], ...]:
    """The ancestors (itself included) whose permissions reach an object of `model`."""
    system = (_m("accounts.System"), None)
    dc, cluster, vm = _m("vms.DataCenter"), _m("vms.Cluster"), _m("vms.VirtualMachine")
    host, sd = _m("vms.Host"), _m("storage.StorageDomain")
    table = {
        "accounts.system": (system,),
        "vms.datacenter": (system, (dc, "pk")),
        "vms.cluster": (system, (dc, "data_center_id"), (cluster, "pk")),
        "vms.host": (
            system,
            (dc, "cluster__data_center_id"),
            (cluster, "cluster_id"),
            (host, "pk"),
        ),
        "vms.virtualmachine": (
            system,
            (dc, "cluster__data_center_id"),
            (cluster, "cluster_id"),
            (vm, "pk"),
        ),
        "vms.template": (system, (dc, "data_center_id"), (_m("vms.Template"), "pk")),
        "vms.network": (system, (dc, "data_center_id"), (_m("vms.Network"), "pk")),
        "vms.vnicprofile": (
            system,
            (dc, "network__data_center_id"),
            (_m("vms.Network"), "network_id"),
            (_m("vms.VnicProfile"), "pk"),
        ),
        "storage.storagedomain": (system, (dc, "data_center_id"), (sd, "pk")),
        "storage.disk": (
            system,
            (dc, "storage_domain__data_center_id"),
            (sd, "storage_domain_id"),
            (cluster, "vm__cluster_id"),
            (vm, "vm_id"),
        ),
        "storage.isoimage": (
            system,
            (dc, "domain__data_center_id"),
            (sd, "domain_id"),
        ),
        "portal.event": (
            system,
            (dc, "cluster__data_center_id"),
            (cluster, "cluster_id"),
            (host, "host_id"),
            (vm, "vm_id"),
        ),
        "portal.job": (
            system,
            (dc, "vm__cluster__data_center_id"),
            (cluster, "vm__cluster_id"),
            (vm, "vm_id"),
        ),
    }
    return table[model._meta.label_lower]


def resolve_path(obj, path: str | None):
    """Follow `path` (e.g. "cluster__data_center_id") from obj; 1 for the System singleton."""
    if path is None:
        return 1
    value = obj
    for part in path.split("__"):
        if value is None:
            return None
        value = getattr(value, part)
    return value
