"""What RQ workers do for logical networks and VM network interfaces (vms/networks.py makes
the jobs). A network job works through the Up hosts of the network's data center; a host
that fails or drops midway fails the job with that host's message, and its on_fail hook puts
back what the job had done (a network being made is taken off every host again). An
interface job hot-plugs, unplugs or updates a running VM's device, or redefines a Down VM;
on failure the interface gets its old values back and the VM its host's status."""

import logging

import hypervisor
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import Outcome, job_handler, job_progress

from .choices import HostStatus, NetworkStatus, VMStatus
from .jobs import (
    JobError,
    interface_spec,
    network_spec,
    networks_ensure,
    vm_domain_spec,
    vm_job_finish,
    vm_job_load,
    vm_settle,
)
from .leftovers import leftovers_record
from .models import Host, HostLeftover, Network, NetworkInterface
from .networks import LIVE_STATUSES, network_forget, network_take_back, nic_restore

log = logging.getLogger(__name__)


def _hosts(network: Network) -> list[Host]:
    """The Up hosts of the network's data center (the others get it when a VM needs it)."""
    return list(
        Host.objects.filter(
            cluster__data_center_id=network.data_center_id, status=HostStatus.UP
        ).order_by("name")
    )


def _each_host(job: Job, network: Network, step: str, call) -> list[Host]:
    """Call `call(connection)` on each Up host of the data center, with progress; a host that
    fails ends the job with its name and libvirt's message."""
    hosts = _hosts(network)
    for n, host in enumerate(hosts):
        job_progress(job, 10 + 80 * n // len(hosts), f"{step} on host {host.name}")
        try:
            call(hypervisor.connect(host.uri))
        except hypervisor.HypervisorError as exc:
            raise JobError(f"Host {host.name}: {exc}") from exc
    return hosts


def _network_name(job: Job) -> str:
    return job.params.get("name", "")


def _best_effort(network: Network, call) -> None:
    for host in _hosts(network):
        try:
            call(hypervisor.connect(host.uri))
        except hypervisor.HypervisorError as exc:
            log.warning("network %s on host %s not put back: %s", network.pk, host.name, exc)


def _network(job: Job) -> Network:
    return Network.objects.get(pk=job.params["network_id"])


def _outcome(job: Job, network: Network, hosts: list[Host], verb: str, last_writes) -> Outcome:
    where = ", ".join(h.name for h in hosts) or "no host (none is Up)"
    return Outcome(
        message=f"Logical network {network.name} was {verb} on {where}.",
        event={"object_name": network.name},
        last_writes=last_writes,
    )


def _unlocked(network: Network):
    def last_writes() -> None:
        Network.objects.filter(pk=network.pk, status=NetworkStatus.LOCKED).update(
            status=NetworkStatus.OPERATIONAL
        )
        broadcast("networks")

    return last_writes


def _create_failed(job: Job, message: str) -> None:
    """A network that did not start on every host is taken off all of them, and forgotten."""
    network = Network.objects.filter(pk=job.params.get("network_id")).first()
    if network is None:
        return
    _best_effort(network, lambda conn: conn.remove_network(network.libvirt_name))
    network_take_back(network.pk)


@job_handler(
    JobKind.NETWORK_CREATE,
    action="create_network",
    object_type="network",
    started=lambda job: f"Started to create logical network {_network_name(job)}.",
    failed=lambda job, vm: f"Failed to create logical network {_network_name(job)}.",
    on_fail=_create_failed,
)
def network_create_job(job: Job) -> Outcome:
    network = _network(job)
    spec = network_spec(network)
    hosts = _each_host(job, network, "Starting the network", lambda c: c.ensure_network(spec))
    return _outcome(job, network, hosts, "created and started", _unlocked(network))


def _edit_failed(job: Job, message: str) -> None:
    """The network gets its old backing back, in the inventory and on the hosts."""
    before = job.params.get("before") or {}
    Network.objects.filter(pk=job.params.get("network_id")).update(
        status=NetworkStatus.OPERATIONAL, **before
    )
    network = Network.objects.filter(pk=job.params.get("network_id")).first()
    if network is not None:
        spec = network_spec(network)
        _best_effort(network, lambda conn: conn.ensure_network(spec, restart=True))
    broadcast("networks")


@job_handler(
    JobKind.NETWORK_EDIT,
    action="edit_network",
    object_type="network",
    started=lambda job: f"Started to change logical network {_network_name(job)} on its hosts.",
    failed=lambda job, vm: f"Failed to change logical network {_network_name(job)}.",
    on_fail=_edit_failed,
)
def network_edit_job(job: Job) -> Outcome:
    network = _network(job)
    spec = network_spec(network)
    hosts = _each_host(
        job, network, "Redefining the network", lambda c: c.ensure_network(spec, restart=True)
    )
    return _outcome(job, network, hosts, "redefined and restarted", _unlocked(network))


def _remove_failed(job: Job, message: str) -> None:
    """The network stays (a host it was already taken off gets it back when a VM needs it)."""
    Network.objects.filter(pk=job.params.get("network_id"), status=NetworkStatus.LOCKED).update(
        status=NetworkStatus.OPERATIONAL
    )
    broadcast("networks")


@job_handler(
    JobKind.NETWORK_REMOVE,
    action="remove_network",
    object_type="network",
    started=lambda job: f"Started to remove logical network {_network_name(job)}.",
    failed=lambda job, vm: f"Failed to remove logical network {_network_name(job)}.",
    on_fail=_remove_failed,
)
def network_remove_job(job: Job) -> Outcome:
    network = _network(job)
    name = network.libvirt_name
    hosts = _each_host(job, network, "Removing the network", lambda c: c.remove_network(name))

    def last_writes() -> None:
        leftovers_record(
            data_center_id=network.data_center_id,
            kind=HostLeftover.NETWORK,
            name=name,
            what=f"The libvirt network {name} of logical network {network.name}",
        )
        network_forget(network.pk)

    return _outcome(job, network, hosts, "removed", last_writes)


# -- network interfaces ----------------------------------------------------------------------


def _nic_load(job: Job):
    vm, conn = vm_job_load(job)
    nic = NetworkInterface.objects.select_related("profile__network").get(pk=job.params["nic_id"])
    return vm, conn, nic


def _live(job: Job) -> bool:
    return job.params.get("from_status") in LIVE_STATUSES


def _nic_started(verb: str):
    def started(job: Job) -> str | None:
        vm = job.vm
        if vm is None or vm.host is None:
            return None
        return f"Started to {verb} a network interface of VM {vm.name} on host {vm.host.name}."

    return started


def _nic_failed(verb: str):
    def failed(job: Job, vm) -> str:
        return f"Failed to {verb} a network interface of VM {vm.name if vm else ''}."

    return failed


def _nic_end(job: Job, vm, nic_id: int, message: str, *, remove: bool = False) -> Outcome:
    """The interface's change is on the host: unlock (or drop) it; a Down VM is Down again."""

    def last_writes() -> None:
        if remove:
            NetworkInterface.objects.filter(pk=nic_id).delete()
        else:
            NetworkInterface.objects.filter(pk=nic_id).update(locked=False)
        if not _live(job):
            vm_job_finish(job, vm, VMStatus.DOWN)
        broadcast(f"vm.{vm.pk}")

    return Outcome(message=message, last_writes=last_writes)


def _redefine(job: Job, conn, vm, **spec) -> None:
    job_progress(job, 50, f"Redefining {vm.name} on host {vm.host.name}")
    conn.define_domain(vm_domain_spec(vm, **spec))


def _create_nic_failed(job: Job, message: str) -> None:
    NetworkInterface.objects.filter(pk=job.params.get("nic_id")).delete()
    vm_settle(job.vm_id)
    broadcast(f"vm.{job.vm_id}")


@job_handler(
    JobKind.NIC_CREATE,
    action="add_nic",
    started=_nic_started("add"),
    failed=_nic_failed("add"),
    on_fail=_create_nic_failed,
)
def nic_create_job(job: Job) -> Outcome:
    vm, conn, nic = _nic_load(job)
    if not _live(job):
        _redefine(job, conn, vm)
        how = "added"
    elif nic.plugged:
        job_progress(job, 20, f"Starting network {nic.profile.network.name}")
        networks_ensure(conn, [nic.profile.network])
        job_progress(job, 50, f"Hot-plugging {nic.name}")
        conn.attach_interface(str(vm.uuid), interface_spec(nic), live=True)
        how = "hot-plugged into"
    else:
        how = "added (unplugged) to"
    return _nic_end(
        job, vm, nic.pk, f"Network interface {nic.name} ({nic.mac}) was {how} VM {vm.name}."
    )


def _edit_nic_failed(job: Job, message: str) -> None:
    nic_restore(job.params.get("nic_id"), job.params.get("before") or {})(job)
    vm_settle(job.vm_id)
    broadcast(f"vm.{job.vm_id}")


@job_handler(
    JobKind.NIC_EDIT,
    action="edit_nic",
    started=_nic_started("edit"),
    failed=_nic_failed("edit"),
    on_fail=_edit_nic_failed,
)
def nic_edit_job(job: Job) -> Outcome:
    vm, conn, nic = _nic_load(job)
    before = job.params.get("before") or {}
    uuid = str(vm.uuid)
    if not _live(job):
        _redefine(job, conn, vm)
    elif before.get("plugged") and nic.plugged:
        networks_ensure(conn, [nic.profile.network])
        job_progress(job, 50, f"Updating {nic.name} (link {'up' if nic.linked else 'down'})")
        conn.update_interface(uuid, interface_spec(nic), live=True)
    elif before.get("plugged"):
        job_progress(job, 50, f"Unplugging {nic.name}")
        old = hypervisor.InterfaceSpec(
            mac=before["mac"], network=nic.profile.network.libvirt_name, model=before["model"]
        )
        conn.detach_interface(uuid, old, live=True)
    elif nic.plugged:
        networks_ensure(conn, [nic.profile.network])
        job_progress(job, 50, f"Hot-plugging {nic.name}")
        conn.attach_interface(uuid, interface_spec(nic), live=True)
    return _nic_end(job, vm, nic.pk, f"Network interface {nic.name} of VM {vm.name} was updated.")


def _remove_nic_failed(job: Job, message: str) -> None:
    NetworkInterface.objects.filter(pk=job.params.get("nic_id")).update(locked=False)
    vm_settle(job.vm_id)
    broadcast(f"vm.{job.vm_id}")


@job_handler(
    JobKind.NIC_REMOVE,
    action="remove_nic",
    started=_nic_started("remove"),
    failed=_nic_failed("remove"),
    on_fail=_remove_nic_failed,
)
def nic_remove_job(job: Job) -> Outcome:
    vm, conn, nic = _nic_load(job)
    if not _live(job):
        _redefine(job, conn, vm, without_nic=nic.pk)
    elif nic.plugged:
        job_progress(job, 50, f"Unplugging {nic.name}")
        conn.detach_interface(str(vm.uuid), interface_spec(nic), live=True)
    return _nic_end(
        job, vm, nic.pk, f"Network interface {nic.name} was removed from VM {vm.name}.", remove=True
    )
