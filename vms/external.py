"""Domains a host runs that Vireo did not define: adopted as external VMs.

As oVirt does with its `external-<name>` VMs, the monitor shows every libvirt domain of a
host that no VM of the inventory is (by uuid) in the host's cluster, with its real status,
memory and CPUs, and its disks: as disks of the storage domain whose pool holds the file, or
as unmanaged disks. Administrators can run, shut down, suspend, reboot and power it off like
any VM, and Import it into full management. A domain undefined outside Vireo disappears from
the inventory with an Event. Nothing here touches the domain itself.
"""

import logging
import re

from django.db import transaction
from django.utils import timezone

import hypervisor
from portal.kernel.audit import event_record
from portal.kernel.live import broadcast, broadcast_gone, coalesced
from portal.kernel.models import Job, Phase, Severity
from portal.kernel.validators import control_characters_strip
from storage.choices import DiskStatus
from storage.models import Disk, StorageDomain

from .choices import RUNNING_STATUSES, VMOrigin, VMStatus, status_from_domain
from .models import Host, VirtualMachine
from .services import NAME_MAX, vm_grants_drop, vm_names_lock

log = logging.getLogger(__name__)

EXTERNAL_PREFIX = "external-"
# What a VM name may not hold (vms.services.NAME_RE allows letters, digits, '-', '_', '.').
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]")
MEMORY_MB_MAX = 2**31 - 1
ADOPT_BATCH = 50  # adoptions whose live updates go out together
VCPUS_MAX = 32767


def external_name(domain_name: str, data_center_id: int) -> str:
    """`external-<domain name>`, made a valid VM name, unique in the data center (-2, -3 ...)."""
    base = EXTERNAL_PREFIX + (_NOT_IN_NAMES.sub("_", domain_name) or "domain")
    base = base[:NAME_MAX]
    taken = {
        n.lower()
        for n in VirtualMachine.objects.filter(
            cluster__data_center_id=data_center_id, name__istartswith=base[: NAME_MAX - 8]
        ).values_list("name", flat=True)
    }
    name, n = base, 2
    while name.lower() in taken:
        suffix = f"-{n}"
        name, n = base[: NAME_MAX - len(suffix)] + suffix, n + 1
    return name


def pool_volumes(host: Host, conn: hypervisor.Connection) -> dict[str, tuple]:
    """File path -> (storage domain, volume) of every volume in the pools of the storage
    domains of the host's data center: one listing per pool, read once per batch of adoptions."""
    volumes = {}
    for domain in StorageDomain.objects.filter(data_center_id=host.cluster.data_center_id):
        try:
            listed = conn.list_volumes(domain.pool_name)
        except hypervisor.HypervisorError:
            continue  # the pool is not on this host
        volumes.update({v.path: (domain, v) for v in listed})
    return volumes


def _disks_sorted(disks, volumes: dict[str, tuple]) -> tuple[list, list]:
    """The domain's disks as (target, storage domain, volume) where a storage domain's pool
    holds the file and no other disk uses it, else as unmanaged [target, device, source]."""
    managed, unmanaged = [], []
    for target, device, source in disks:
        if device != "disk":
            continue  # CD-ROMs and floppies are no disks of the VM's
        domain, volume = volumes.get(source, (None, None))
        in_use = (
            domain is not None
            and Disk.objects.filter(storage_domain=domain, volume_name=volume.name).exists()
        )
        if domain is None or in_use:
            unmanaged.append([target, device, source])
        else:
            managed.append((target, domain, volume))
    return managed, unmanaged


def domain_adopt(
    host: Host, conn: hypervisor.Connection, uuid: str, volumes: dict | None = None
) -> VirtualMachine | None:
    """Show the host's domain `uuid` as an external VM unless the inventory knows it; read
    again from the host, so a domain Vireo undefined meanwhile (a removed VM) is not taken.
    `volumes`: pool_volumes(host, conn), when the caller adopts several."""
    if VirtualMachine.objects.filter(uuid=uuid).exists():
        return None
    try:
        info = conn.get_domain(uuid)
        disks = conn.domain_disks(uuid)
    except hypervisor.DomainNotFound:
        return None
    if volumes is None:
        volumes = pool_volumes(host, conn)
    managed, unmanaged = _disks_sorted(disks, volumes)
    status = status_from_domain(info.state, info.has_managed_save)
    data_center_id = host.cluster.data_center_id
    with transaction.atomic():
        vm_names_lock(data_center_id)
        if VirtualMachine.objects.filter(uuid=uuid).exists():  # made by Vireo meanwhile
            return None
        domain_name = control_characters_strip(info.name)[:NAME_MAX]
        vm = VirtualMachine.objects.create(
            uuid=uuid,
            name=external_name(domain_name, data_center_id),
            description=f"Defined outside Vireo on host {host.name}.",
            cluster=host.cluster,
            host=host,
            status=status,
            started_at=timezone.now() if status in RUNNING_STATUSES else None,
            memory_mb=max(1, min(info.memory_mb, MEMORY_MB_MAX)),
            vcpus=max(1, min(info.vcpus, VCPUS_MAX)),
            origin=VMOrigin.EXTERNAL,
            domain_name=domain_name,
            unmanaged_disks=unmanaged,
        )
        for target, domain, volume in managed:
            Disk.objects.create(
                alias=f"{vm.name}_{target}"[:255],
                vm=vm,
                storage_domain=domain,
                host=host,
                volume_name=volume.name,
                size_bytes=volume.capacity,
                actual_bytes=volume.allocation,
                sparse=volume.format == "qcow2",
                status=DiskStatus.OK,
                target=target,
            )
        event_record(
            action="adopt",
            phase=Phase.DETECTED,
            vm=vm,
            host=host,
            severity=Severity.WARNING,
            message=(
                f"Host {host.name} runs domain {domain_name}, which Vireo did not define: "
                f"it is shown as {vm.name}."
            ),
        )
        broadcast("vms", "disks")
    return vm


def host_domains_adopt(host: Host, conn: hypervisor.Connection, domains) -> int:
    """Adopt every domain of the host's list that the inventory does not know. Every poll:
    one query on the host's VMs (by index) when there is none; new domains are read from the
    host one by one, their pools listed once, their live updates sent a batch at a time."""
    on_host = {
        str(u) for u in VirtualMachine.objects.filter(host=host).values_list("uuid", flat=True)
    }
    unknown = [d.uuid for d in domains if d.uuid not in on_host]
    if not unknown:
        return 0
    elsewhere = {  # known on another host (moved there meanwhile): not this host's to adopt
        str(u)
        for u in VirtualMachine.objects.filter(uuid__in=unknown).values_list("uuid", flat=True)
    }
    new = [u for u in unknown if u not in elsewhere]
    volumes = pool_volumes(host, conn) if new else {}
    adopted = 0
    for start in range(0, len(new), ADOPT_BATCH):
        with coalesced():
            for uuid in new[start : start + ADOPT_BATCH]:
                try:
                    adopted += domain_adopt(host, conn, uuid, volumes) is not None
                except hypervisor.HypervisorError as exc:
                    log.warning("domain %s of host %s not adopted: %s", uuid, host.name, exc)
    return adopted


def external_gone(vm: VirtualMachine, host: Host) -> bool:
    """An external VM whose domain was undefined on its host leaves the inventory (its disks'
    rows too; the files are not Vireo's to touch), with an Event. Not while a job works on it."""
    with transaction.atomic():
        locked = (
            VirtualMachine.objects.select_for_update()
            .filter(pk=vm.pk, origin=VMOrigin.EXTERNAL)
            .first()
        )
        if locked is None or Job.objects.filter(vm_id=vm.pk, status__in=Job.ACTIVE).exists():
            return False
        event_record(
            action="adopt",
            phase=Phase.DETECTED,
            host=host,
            cluster=host.cluster,
            object_name=locked.name,
            severity=Severity.WARNING,
            message=(
                f"Domain {locked.domain_name or locked.name} was removed from host {host.name} "
                f"outside Vireo: {locked.name} is gone."
            ),
        )
        Disk.objects.filter(vm=locked).delete()
        vm_grants_drop(locked.pk)
        locked.delete()
        broadcast_gone(f"vm.{vm.pk}")
        broadcast("vms", "disks")
    return True


def host_externals_gone(host: Host, domains) -> int:
    """Take away the host's external VMs whose domains its list no longer has."""
    present = {d.uuid for d in domains}
    # One migrating leaves its host's list before the migrate job moves it: not gone.
    externals = VirtualMachine.objects.filter(host=host, origin=VMOrigin.EXTERNAL).exclude(
        status=VMStatus.MIGRATING_FROM
    )
    missing = [pk for pk, uuid in externals.values_list("pk", "uuid") if str(uuid) not in present]
    return sum(external_gone(vm, host) for vm in VirtualMachine.objects.filter(pk__in=missing))
