"""What an RQ worker does for Migrate (vms/migration.py makes the job): the source host's
libvirtd migrates the guest peer-to-peer to the destination, the job's progress is libvirt's
job statistics (memory left, iteration), and it aborts the libvirt job when Cancel Migration
asked. On success the VM's row moves to the destination in the job's last transaction; on
failure (or a worker that died) the VM is settled where its guest actually runs."""

import dataclasses
import logging

from django.conf import settings
from django.db import transaction

import hypervisor
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import Outcome, job_handler, job_progress

from .choices import HostStatus, VMStatus
from .evacuation import evacuation_next
from .jobs import JobError, vm_job_finish, vm_job_load, vm_settle
from .migration import migration_options
from .models import Host, VirtualMachine

log = logging.getLogger(__name__)
MiB = 1024 * 1024


def _dest(job: Job) -> Host | None:
    return Host.objects.filter(pk=job.params.get("host_id")).first()


def _started(job: Job) -> str | None:
    vm, dest = job.vm, _dest(job)
    if vm is None or vm.host is None or dest is None:
        return None
    return f"Started to migrate VM {vm.name} from host {vm.host.name} to {dest.name}."


def _status_on(host: Host, uuid: str) -> str | None:
    """Up or Paused when the guest runs on `host`, else None."""
    try:
        info = hypervisor.connect(host.uri).get_domain(uuid)
    except hypervisor.HypervisorError:
        return None
    if info.state == hypervisor.DomainState.RUNNING:
        return VMStatus.UP
    return VMStatus.PAUSED if info.state == hypervisor.DomainState.PAUSED else None


def _status_after(job: Job) -> str:
    """A Paused VM migrates paused and stays so; a running one ends Up."""
    return VMStatus.PAUSED if job.params.get("paused") else VMStatus.UP


def _migrate_failed(job: Job, message: str) -> None:
    """The VM where its guest runs: on the destination if the migration got there before
    the job ended (a worker that died at the last step), else settled on its source."""
    vm = VirtualMachine.objects.filter(pk=job.vm_id).first()
    if vm is None:
        return
    source_id = vm.host_id
    dest = _dest(job)
    there = _status_on(dest, str(vm.uuid)) if dest is not None else None
    with transaction.atomic():
        if vm.status == VMStatus.MIGRATING_FROM and there is not None:
            VirtualMachine.objects.filter(pk=vm.pk, status=VMStatus.MIGRATING_FROM).update(
                host=dest, status=there, migrating_to=None
            )
        else:
            VirtualMachine.objects.filter(pk=vm.pk).update(migrating_to=None)
            vm_settle(vm.pk)
    broadcast(f"vm.{vm.pk}", "vms", "hosts")
    evacuation_next(source_id)


def _progress_step(dest: Host, reading: hypervisor.MigrationProgress) -> str:
    left = reading.data_remaining // MiB
    total = reading.data_total // MiB
    where = f"Migrating to {dest.name}: {left} of {total} MiB of memory left"
    if reading.iteration:
        where += f", iteration {reading.iteration}"
    if reading.post_copy:
        where += " (post-copy)"
    return where


def _supported(
    conn, source: Host, options: hypervisor.MigrationOptions
) -> tuple[hypervisor.MigrationOptions, str]:
    """The options the source host's libvirt can use: compression only where it supports it
    (the policy's "where the host's libvirt supports it"), with a note for the job's message."""
    if options.compression and not conn.migration_capable().get("compression"):
        return (
            dataclasses.replace(options, compression=()),
            f" (without compression: the libvirt of host {source.name} does not support it)",
        )
    return options, ""


@job_handler(
    JobKind.VM_MIGRATE,
    action="migrate",
    started=_started,
    failed=lambda job, vm: f"Failed to migrate VM {vm.name if vm else ''}.",
    on_fail=_migrate_failed,
)
def vm_migrate_job(job: Job) -> Outcome:
    vm, conn = vm_job_load(job)
    source, dest = vm.host, _dest(job)
    if dest is None or dest.status != HostStatus.UP:
        raise JobError(f"The destination host is not Up; {vm.name} stays on {source.name}.")
    cancelled = Job.objects.filter(pk=job.pk, cancel_requested=True).exists

    def progress(reading: hypervisor.MigrationProgress) -> None:
        job_progress(job, max(1, reading.percent), _progress_step(dest, reading))

    options, note = _supported(conn, source, migration_options(vm, dest))
    if cancelled():
        result = None
    else:
        job_progress(job, 1, f"Migrating to {dest.name}{note}")
        try:
            dest_conn = hypervisor.connect(dest.uri)
            result = conn.migrate(
                str(vm.uuid),
                dest_conn,
                options,
                progress=progress,
                should_abort=cancelled,
                poll=settings.VIREO_MIGRATION_POLL_SECONDS,
            )
        except hypervisor.MigrationCancelled:
            result = None
    if result is None:

        def stay() -> None:
            vm_job_finish(job, vm, _status_after(job), migrating_to=None)
            broadcast("hosts")
            evacuation_next(source.pk)

        return Outcome(
            message=f"The migration of VM {vm.name} to {dest.name} was cancelled; it runs on "
            f"host {source.name}.",
            last_writes=stay,
        )
    if result.paused and not job.params.get("paused"):
        dest_conn.resume(str(vm.uuid))  # Suspend workload if needed: it runs again there
    downtime = dest_conn.migration_downtime(str(vm.uuid))

    def arrived() -> None:
        vm_job_finish(job, vm, _status_after(job), host=dest, migrating_to=None)
        vm.disks.exclude(host__isnull=True).update(host=dest)  # shared storage: reached there
        broadcast("hosts", "disks")
        evacuation_next(source.pk)

    figures = f"in {result.duration_s:.1f} s"
    if downtime is not None:
        figures += f", downtime {downtime} ms"
    if options.bandwidth_mbps:
        figures += f", bandwidth at most {options.bandwidth_mbps} Mbps"
    if result.steps:
        figures += f"; {'; '.join(result.steps)}"
    return Outcome(
        message=f"VM {vm.name} was migrated from host {source.name} to {dest.name} {figures}"
        f"{note}.",
        last_writes=arrived,
    )
