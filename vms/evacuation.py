"""A host moved to Maintenance with VMs on it (the chapter's "Automatic Virtual Machine
Migration"): it is Preparing For Maintenance while the monitor, once a cycle, migrates its VMs
away, higher Priority for Run/Migration queue first (then by name), at most the cluster's
maximum concurrent outgoing migrations at a time (engine-config's
MaxNumberOfConcurrentMigrations when the cluster sets none). Each migration is an ordinary
Migrate (`vms.migration.vm_migrate`) asked by the system, as an automatic one: Allow manual
migration only and Do not allow migration keep the VM where it is.

A Paused VM leaves paused. A VM that cannot leave (no host takes it, migration not allowed,
neither Up nor Paused, its migration failed or was cancelled: not tried again until Activate
and Maintenance) is named in the host's `maintenance_reason`, shown on the Hosts tab, and in
one Event when the list changes; the host stays Preparing For Maintenance until it leaves or is shut down, or Activate cancels
the move. The host reaches Maintenance when only Down or Suspended VMs remain on it.
"""

import logging

from django.db import transaction
from django.utils import timezone

from portal.kernel.audit import event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, JobStatus, Phase, Severity

from .choices import VM_AT_REST_STATUSES, HostStatus, VMStatus
from .host_devices import devices_hosts_of, pinned_by_devices_text
from .migration import concurrent_limit, vm_migrate
from .models import Host, VirtualMachine
from .scheduling import NoHostAvailable

log = logging.getLogger(__name__)

PREPARING = HostStatus.PREPARING_FOR_MAINTENANCE


def evacuations_run() -> int:
    """One step of every host Preparing For Maintenance (the monitor calls it once a cycle);
    returns how many migrations were started."""
    started = 0
    for host_id in Host.objects.filter(status=PREPARING).values_list("pk", flat=True):
        try:
            started += host_evacuate(host_id)
        except Exception:
            log.exception("evacuating host %s failed", host_id)
    return started


def _not_at_rest(host: Host):
    return VirtualMachine.objects.filter(host=host).exclude(status__in=VM_AT_REST_STATUSES)


def host_evacuate(host_id: int) -> int:
    """Start the next migrations out of the host (by priority, within the limit), record the
    VMs that cannot leave, or move the empty host to Maintenance. Returns how many started.
    The monitor calls it once a cycle and a migration out of the host, as it ends, at once
    (`evacuation_next`); the host's row lock keeps two callers within the limit."""
    with transaction.atomic():
        host = (
            Host.objects.select_for_update(no_key=True)
            .select_related("cluster")
            .filter(pk=host_id, status=PREPARING)
            .first()
        )
        if host is None:
            return 0
        if not _not_at_rest(host).exists():
            _maintenance_reached(host)
            return 0
        room = concurrent_limit(host) - (
            _not_at_rest(host).filter(status=VMStatus.MIGRATING_FROM).count()
        )
        stuck: dict[str, str] = {}
        started = 0
        waiting = list(
            _not_at_rest(host).exclude(status=VMStatus.MIGRATING_FROM).order_by("-priority", "name")
        )
        ids = [vm.pk for vm in waiting]
        given_up, pinned = _migrations_given_up(host, ids), devices_hosts_of(ids)
        for vm in waiting:
            if vm.status not in (VMStatus.UP, VMStatus.PAUSED):
                stuck[vm.name] = f"it is {vm.get_status_display()}"
                continue
            if vm.pk in pinned:
                stuck[vm.name] = pinned_by_devices_text(pinned[vm.pk])
                continue
            if vm.pk in given_up:
                stuck[vm.name] = given_up[vm.pk]
                continue
            if started >= room:
                continue  # its turn comes when a migration ends
            try:
                vm_migrate(vm_id=vm.pk, user=None, automatic=True)
            except NoHostAvailable as exc:
                stuck[vm.name] = "; ".join(sorted(set(exc.reasons.values()))) or str(exc)
            except ActionRefused as exc:
                stuck[vm.name] = str(exc)
            else:
                started += 1
        _reason_record(host, stuck)
    return started


def evacuation_next(host_id: int | None) -> None:
    """A migration out of `host_id` ended: when the host is Preparing For Maintenance, its
    next VMs leave now rather than at the monitor's next cycle (after the caller's commit)."""
    if host_id is None:
        return

    def step() -> None:
        if Host.objects.filter(pk=host_id, status=PREPARING).exists():
            try:
                host_evacuate(host_id)
            except Exception:
                log.exception("evacuating host %s failed", host_id)

    transaction.on_commit(step)


def _migrations_given_up(host: Host, vm_ids: list[int]) -> dict[int, str]:
    """VM id -> why the evacuation does not try it again: its last automatic migration since
    the host went Preparing failed or was cancelled (Migrate by hand, or Activate and
    Maintenance again, retries it). One query for all the waiting VMs."""
    last: dict[int, Job] = {}
    jobs = (
        Job.objects.filter(vm_id__in=vm_ids, kind=JobKind.VM_MIGRATE, params__automatic=True)
        .filter(created_at__gte=host.maintenance_since or timezone.now())
        .exclude(status__in=Job.ACTIVE)
        .order_by("vm_id", "-pk")
        .only("vm_id", "status", "error", "cancel_requested")
    )
    for job in jobs:
        last.setdefault(job.vm_id, job)
    out = {}
    for vm_id, job in last.items():
        if job.status == JobStatus.FAILED:
            error = job.error or "no error reported"
            out[vm_id] = (
                f"its migration failed ({error if len(error) <= 200 else error[:199] + '…'})"
            )
        elif job.cancel_requested:
            out[vm_id] = "its migration was cancelled"
    return out


def _reason_text(stuck: dict[str, str]) -> str:
    return "\n".join(f"{name} cannot leave: {why}" for name, why in sorted(stuck.items()))


def _reported(reason: str) -> set[str]:
    """The VM names an earlier step listed (VM names hold no spaces)."""
    return {line.split(" ", 1)[0] for line in reason.splitlines() if " cannot leave: " in line}


def _reason_record(host: Host, stuck: dict[str, str]) -> None:
    """Keep the host's reason current; an Event when VMs not reported before cannot leave."""
    text = _reason_text(stuck)
    if text == host.maintenance_reason:
        return
    if not Host.objects.filter(pk=host.pk, status=PREPARING).update(maintenance_reason=text):
        return  # activated meanwhile
    broadcast("hosts", f"host.{host.pk}")
    if set(stuck) - _reported(host.maintenance_reason):
        event_record(
            action="host_maintenance",
            phase=Phase.DETECTED,
            severity=Severity.WARNING,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            message=f"Host {host.name} stays Preparing For Maintenance: "
            + "; ".join(f"{name} cannot leave ({why})" for name, why in sorted(stuck.items()))
            + ".",
        )


def _maintenance_reached(host: Host) -> None:
    """Under the host's row lock (the one Run and Migrate take to place a VM there), move
    it to Maintenance if still empty and still Preparing."""
    with transaction.atomic():
        locked = Host.objects.select_for_update().filter(pk=host.pk, status=PREPARING).first()
        if locked is None or _not_at_rest(locked).exists():
            return
        Host.objects.filter(pk=host.pk).update(status=HostStatus.MAINTENANCE, maintenance_reason="")
        event_record(
            action="host_maintenance",
            phase=Phase.SUCCEEDED,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            message=f"Host {host.name} is in Maintenance: no VM runs on it any more.",
        )
        broadcast("hosts", f"host.{host.pk}")
