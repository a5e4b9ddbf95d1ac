"""Migrate and Cancel Migration (the chapter's "Migrating Virtual Machines Between Hosts").

Migrate moves a running VM live to another Up host of its cluster: the destination chosen by
the administrator (Select Destination Host) or for them (Select Host Automatically). The VM
holds Migrating From, with `migrating_to` naming the destination, while the job
(vms/migration_jobs.py) has the source host's libvirtd migrate it peer-to-peer with the
options of the migration policy; Cancel Migration asks that job to abort the libvirt job, and
the VM stays Up on its source host.
"""

from django.db import transaction

import hypervisor
from portal.kernel.audit import actor, event_record
from portal.kernel.config import config_get
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase
from portal.kernel.tasks import queue_ensure_available

from .actions import VMAction
from .choices import VMStatus
from .host_devices import migration_devices_reason
from .migration_policy import effective_migration_settings
from .models import Host, VirtualMachine
from .scheduling import NoHostAvailable, Purpose, candidates_of, evaluate, request_of, schedule
from .services import vm_begin, vm_load


def migration_targets(vm: VirtualMachine) -> list[Host]:
    """The hosts the Migrate window offers: those of the VM's cluster the scheduler would
    take it to, best first (its own host aside)."""
    request = request_of(vm, Purpose.MIGRATE)
    pool = [c for c in candidates_of(vm) if c.host.pk != vm.host_id]
    kept, _reasons = evaluate(request, pool)
    return [c.host for c in kept]


def _destination(vm: VirtualMachine, host_id: int | None, *, automatic: bool = False) -> Host:
    """The chosen host, if the scheduler's filters let it take the VM; or (None: Select Host
    Automatically) the scheduler's best host of the cluster. Locked until commit. `automatic`:
    the engine itself migrates (Maintenance), which Allow manual migration only refuses."""
    if host_id is None:
        return schedule(vm, purpose=Purpose.MIGRATE, exclude=[vm.host_id], automatic=automatic)
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        raise ActionRefused("That host does not exist any more.")
    if host.pk == vm.host_id:
        raise ActionRefused(f"Cannot migrate {vm.name} to {host.name}: the VM runs there.")
    try:
        return schedule(vm, purpose=Purpose.MIGRATE, candidates=[host])
    except NoHostAvailable as exc:
        why = exc.reasons.get(host.name) or str(exc)
        raise ActionRefused(f"Cannot migrate {vm.name} to {host.name}: {why}.") from None


def _storage_check(vm: VirtualMachine) -> None:
    """A disk no storage domain holds: Vireo cannot tell whether another host reaches it (a
    disk on one host's local storage is the scheduler's storage filter's)."""
    if vm.unmanaged_disks:
        targets = ", ".join(str(d[0]) for d in vm.unmanaged_disks)
        raise ActionRefused(
            f"Cannot migrate {vm.name}: no storage domain holds its disk(s) {targets}, so "
            "Vireo cannot tell whether the destination reaches them."
        )


def vm_migrate(*, vm_id: int, user, host_id: int | None = None, automatic: bool = False) -> Job:
    """Migrate a running (or Paused: it stays paused there) VM live to another host of its
    cluster: `host_id`, or (None) the one Select Host Automatically picks. `automatic`: the engine migrates it by itself (a
    host moved to Maintenance, `vms.evacuation`), with `user` None."""
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        if vm.status in (VMStatus.UP, VMStatus.PAUSED):
            if vm.cpu_passthrough:
                raise ActionRefused(
                    f"Cannot migrate {vm.name}: it passes the host CPU through (Pass-Through "
                    "Host CPU, Edit VM's System tab), so it can run only on its host's CPU."
                )
            _storage_check(vm)
            if why := migration_devices_reason(vm):
                raise ActionRefused(
                    f"Cannot migrate {vm.name}: {why}. Remove its host devices (Host Devices "
                    "sub-tab) to migrate it."
                )
            # Locked: the destination cannot go into Maintenance under the migration.
            dest = _destination(vm, host_id, automatic=automatic)
        else:
            dest = None  # vm_begin refuses, with the VM's status
        job = vm_begin(
            vm=vm,
            action=VMAction.MIGRATE,
            user=user,
            params={
                "host_id": dest.pk if dest else None,
                "automatic": automatic,
                "paused": vm.status == VMStatus.PAUSED,
            },
            message=f"{actor(user)} asked to migrate VM {vm.name} from host "
            f"{vm.host.name if vm.host else '?'} to {dest.name if dest else '?'}"
            + (" (selected automatically)." if host_id is None else "."),
            on_enqueue_failure=lambda job: VirtualMachine.objects.filter(pk=vm_id).update(
                migrating_to=None
            ),
        )
        VirtualMachine.objects.filter(pk=vm.pk).update(migrating_to=dest)
        broadcast(f"vm.{vm.pk}", "vms", "hosts")
        return job


def vm_migration_cancel(*, vm_id: int, user) -> Job:
    """Cancel Migration: the migrate job aborts the libvirt job; the VM stays Up on its
    source host (the job ends the status)."""
    with transaction.atomic():
        vm = vm_load(vm_id)
        if vm.status != VMStatus.MIGRATING_FROM:
            raise ActionRefused(
                f"Cannot cancel the migration of {vm.name}: the VM is {vm.get_status_display()}."
            )
        job = (
            Job.objects.filter(vm=vm, kind=JobKind.VM_MIGRATE, status__in=Job.ACTIVE)
            .order_by("-pk")
            .first()
        )
        if job is None or not Job.objects.filter(pk=job.pk, status__in=Job.ACTIVE).update(
            cancel_requested=True
        ):
            raise ActionRefused(f"Cannot cancel the migration of {vm.name}: it has just ended.")
        event_record(
            action=VMAction.CANCEL_MIGRATION,
            phase=Phase.REQUESTED,
            message=f"{actor(user)} asked to cancel the migration of VM {vm.name}.",
            user=user,
            vm=vm,
            job=job,
        )
        return job


# The named policies: the maximum downtime as a ladder over the memory iterations (a share
# of the configured maximum per step), and when to switch to post-copy or pause the guest.
POLICY_LADDER = (1 / 8, 1 / 4, 1 / 2, 1)
POST_COPY_AFTER = 4  # iterations without converging before post-copy takes over
PAUSE_AFTER = 6  # ... before the guest is paused so the copy ends


def auto_bandwidth(source: Host | None, dest: Host) -> int | None:
    """Auto bandwidth, as oVirt computes it without a QoS rate limit: the slower of the two
    hosts' links, shared by the migrations the source may run at once (the cluster's maximum
    concurrent outgoing migrations, else engine-config's). None (libvirt's own) when a link
    speed is not known."""
    if source is None or not source.link_speed_mbps or not dest.link_speed_mbps:
        return None
    concurrent = concurrent_limit(source)
    return max(1, min(source.link_speed_mbps, dest.link_speed_mbps) // max(1, concurrent))


def concurrent_limit(host: Host) -> int:
    """The most outgoing migrations a host runs at once: its cluster's, or engine-config's
    MaxNumberOfConcurrentMigrations."""
    own = host.cluster.max_concurrent_migrations
    return own if own else int(config_get("MaxNumberOfConcurrentMigrations"))


def migration_options(vm: VirtualMachine, dest: Host) -> hypervisor.MigrationOptions:
    """The libvirt options of the VM's migration to `dest`, from its effective migration
    settings (`vms.migration_policy`: the VM's, else its cluster's, else engine-config's): the
    policy (Legacy: the maximum downtime at once; Minimal downtime: a ladder up to it;
    Post-copy: the ladder, then post-copy; Suspend workload if needed: the ladder, then a
    pause), auto-convergence, compression and bandwidth. qemu's memory stream goes to the
    destination's address."""
    settings = effective_migration_settings(vm)
    policy = settings["policy"][0]
    downtime = int(settings["downtime"][0])
    if policy == "legacy":
        steps = (downtime,)
    else:
        steps = tuple(dict.fromkeys(max(10, int(downtime * share)) for share in POLICY_LADDER))
    compression = settings["compression"][0]
    bandwidth = None  # Hypervisor default: libvirt's own
    if settings["bandwidth"][0] == "custom":
        bandwidth = settings["bandwidth_mbps"][0]
    elif settings["bandwidth"][0] == "auto":
        bandwidth = auto_bandwidth(vm.host, dest)
    address = dest.address or ""
    return hypervisor.MigrationOptions(
        auto_converge=bool(settings["auto_converge"][0]),
        compression=() if compression == "none" else (compression,),
        downtime_steps=steps,
        bandwidth_mbps=bandwidth,
        post_copy_after=POST_COPY_AFTER if policy == "post_copy" else None,
        pause_after=PAUSE_AFTER if policy == "suspend_workload" else None,
        migrate_uri=f"tcp://{address}" if address else "",
    )
