"""High availability: the HA watcher, which restarts a Highly Available VM that stopped
without anyone asking, and Confirm 'Host has been Rebooted' (oVirt's manual fence).

The monitor (vms.monitor) tells the watcher when it sees a VM that was running go Down
(`vm_stop_detected`). Whether anyone asked is read from what libvirt says of the stop (the
lifecycle event's detail, else the domain's shut-off reason) and from the job log: a portal
Shutdown, Power Off, Suspend, Migrate or Remove of the VM since it started is a request, and
so is a guest that shut itself down (libvirt's SHUTDOWN_GUEST, or a plain "shutdown" reason),
as oVirt does. A crash (qemu failed, the process killed, a guest panic reported by the pvpanic
device), a destroy or a signal from the host that no job asked for is not.

A VM to restart gets a `HaRestart` row (one per VM: never two restarts of one VM), so a
monitor that restarts goes on with it. Each pass of the watcher (`ha_restarts_run`, in the
monitor) starts the waiting VMs, higher Priority for Run/Migration queue first, as a Run on
the host the scheduler gives for an HA restart (`vms.scheduling`, purpose ha_restart); an
attempt that fails, or finds no host, is tried again after engine-config's
RetryToRunAutoStartVmIntervalInSeconds, doubled after each failure (at most 10 minutes), up to
MaxNumOfTriesToRunFailedAutoStartVm tries; then an Event says the watcher gives up.

A host that stops answering leaves its VMs Unknown: the same disk must never run twice, so
they are restarted elsewhere only once the host is known to be down, fenced by its power
management (vms.fencing, from the monitor) or confirmed rebooted by an administrator
(`host_reboot_confirm`); both go through `host_vms_released`.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

import hypervisor
from portal.kernel.audit import actor, event_record
from portal.kernel.config import config_get
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, JobStatus, Phase, Severity
from portal.kernel.tasks import queue_ensure_available

from .actions import HOST_ACTIONS, VMAction
from .choices import RUNNING_STATUSES, HostStatus, VMStatus
from .models import HaRestart, Host, VirtualMachine
from .scheduling import NoHostAvailable, Purpose, schedule
from .services import disks_storage_check, vm_begin, vm_load, vm_place_on

log = logging.getLogger(__name__)

RETRY_CAP_SECONDS = 600
# Jobs whose stop of the guest is a request: a VM that goes Down after one of these (since it
# last started) was stopped on purpose.
STOPPING_JOBS = (
    JobKind.VM_SHUTDOWN,
    JobKind.VM_POWER_OFF,
    JobKind.VM_SUSPEND,
    JobKind.VM_MIGRATE,
    JobKind.VM_REMOVE,
)
# What libvirt says of a stop nobody asked for, and how the Event words it.
UNREQUESTED = {
    "failed": "its QEMU process failed or was killed",
    "crashed": "it crashed",
    "panicked": "its guest panicked",
    "crashloaded": "its guest panicked",
    "destroyed": "it was destroyed outside Vireo",
    "host": "QEMU was told to quit on its host",
    "daemon": "libvirt found its QEMU process gone",
    "unknown": "it stopped for a reason libvirt does not know",
    "lost": "its host stopped running it",
}
REQUESTED = {
    "guest": "the guest operating system shut itself down",
    "shutdown": "the guest operating system shut itself down",
    "migrated": "it migrated",
    "saved": "its state was saved",
    "from_snapshot": "it was reverted to a snapshot",
    "job": "it was stopped from Vireo",
}


@dataclass(frozen=True)
class StopCause:
    """Why a VM stopped: `unrequested` ones are restarted when the VM is Highly Available."""

    unrequested: bool
    why: str


def stop_cause(*, hints: dict | None, shutoff_reason: str, asked_by_job: bool) -> StopCause:
    """Tell a stop nobody asked for from a requested one. `hints`: what the lifecycle events
    said ({"stopped": "failed", "shutdown": "guest", "crashed": "panicked"}), empty when the
    monitor only polled; `shutoff_reason`: the domain's shut-off reason now ("" unknown);
    `asked_by_job`: a portal job that stops the guest ran since it started."""
    if asked_by_job:
        return StopCause(False, REQUESTED["job"])
    hints = hints or {}
    if hints.get("crashed"):
        return StopCause(True, UNREQUESTED[hints["crashed"]])
    stopped = hints.get("stopped") or shutoff_reason
    if stopped == "shutdown":
        # A shutdown QEMU reports as the guest's own (ACPI completed, poweroff inside) is a
        # request from inside; one the host asked for (a signal to QEMU) is not.
        if hints.get("shutdown") == "host":
            return StopCause(True, UNREQUESTED["host"])
        return StopCause(False, REQUESTED["shutdown"])
    if stopped in REQUESTED:
        return StopCause(False, REQUESTED[stopped])
    return StopCause(True, UNREQUESTED.get(stopped, UNREQUESTED["unknown"]))


def asked_to_stop(vm: VirtualMachine, since: datetime | None) -> bool:
    """Whether a portal job that stops the guest was made for the VM since `since` (its last
    start; the last day when that is not known)."""
    since = since or timezone.now() - timedelta(days=1)
    return Job.objects.filter(vm=vm, kind__in=STOPPING_JOBS, created_at__gte=since).exists()


def vm_stop_detected(
    vm: VirtualMachine,
    *,
    host: Host,
    started_at: datetime | None,
    hints: dict | None = None,
    shutoff_reason: str = "",
) -> HaRestart | None:
    """The monitor saw the VM, which was running, go Down. A Highly Available VM that nobody
    asked to stop is queued for a restart (an Event says so); returns its HaRestart."""
    if not vm.highly_available or vm.is_external:
        return None
    cause = stop_cause(
        hints=hints, shutoff_reason=shutoff_reason, asked_by_job=asked_to_stop(vm, started_at)
    )
    if not cause.unrequested:
        event_record(
            action="ha_restart",
            phase=Phase.DETECTED,
            vm=vm,
            host=host,
            message=f"Highly Available VM {vm.name} is Down and is not restarted: {cause.why}.",
        )
        return None
    return ha_restart_queue(vm, host=host, why=cause.why)


def ha_restart_queue(vm: VirtualMachine, *, host: Host | None, why: str) -> HaRestart:
    """Queue the VM's restart (or take up the one it has: one per VM), with the chapter's
    Event "Highly Available <vm> failed. It will be restarted automatically."."""
    restart, made = HaRestart.objects.get_or_create(vm=vm, defaults={"reason": why[:1000]})
    if not made:
        # It failed again before the watcher saw its restart end: the tries go on counting.
        HaRestart.objects.filter(pk=restart.pk).update(
            reason=why[:1000], job=None, next_attempt_at=_next_attempt(restart.attempts)
        )
    event_record(
        action="ha_restart",
        phase=Phase.DETECTED,
        vm=vm,
        host=host,
        severity=Severity.WARNING,
        message=f"Highly Available {vm.name} failed ({why}). It will be restarted automatically.",
    )
    broadcast(f"vm.{vm.pk}")
    return restart


def _next_attempt(failures: int) -> datetime:
    """When to try again after `failures` failed tries: the interval, doubled each time."""
    if failures <= 0:
        return timezone.now()
    interval = int(config_get("RetryToRunAutoStartVmIntervalInSeconds"))
    delay = min(RETRY_CAP_SECONDS, interval * 2 ** min(failures - 1, 16))
    return timezone.now() + timedelta(seconds=delay)


def ha_restarts_run() -> int:
    """One pass of the HA watcher over the VMs waiting for a restart, higher priority first:
    ends the attempts whose job ended, starts those whose time has come. Returns how many
    restarts were started."""
    started = 0
    waiting = HaRestart.objects.order_by("-vm__priority", "created_at", "pk")
    for restart_id in waiting.values_list("pk", flat=True):
        try:
            started += ha_restart_step(restart_id)
        except Exception:
            log.exception("HA restart %s failed", restart_id)
    return started


def _ended(restart: HaRestart, vm: VirtualMachine, *, message: str, severity=Severity.NORMAL):
    HaRestart.objects.filter(pk=restart.pk).delete()
    event_record(
        action="ha_restart",
        phase=Phase.SUCCEEDED if severity == Severity.NORMAL else Phase.FAILED,
        vm=vm,
        severity=severity,
        message=message,
    )
    broadcast(f"vm.{vm.pk}")


def ha_restart_step(restart_id: int) -> int:
    """Move one waiting restart on; 1 if a Run was started. Under the row's lock (skipped
    when another pass holds it), so no two passes start the same VM."""
    with transaction.atomic():
        restart = (
            HaRestart.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("vm__cluster", "vm__host", "job")
            .filter(pk=restart_id)
            .first()
        )
        if restart is None:
            return 0
        vm, job = restart.vm, restart.job
        if job is not None:
            if job.status in Job.ACTIVE:
                return 0
            if job.status == JobStatus.SUCCEEDED and vm.status in RUNNING_STATUSES:
                _ended(
                    restart,
                    vm,
                    message=f"{vm.name} was restarted on Host {vm.host.name if vm.host else '?'}.",
                )
                return 0
            _attempt_failed(restart, vm, job.error or "the Run did not start it")
            return 0
        if not vm.highly_available:
            _ended(restart, vm, message=f"{vm.name} is no longer Highly Available: not restarted.")
            return 0
        if vm.status != VMStatus.DOWN:
            if vm.status in RUNNING_STATUSES:
                _ended(restart, vm, message=f"{vm.name} is running again: no restart needed.")
            return 0  # Unknown, busy, Suspended: wait
        if restart.next_attempt_at > timezone.now():
            return 0
        try:
            job = vm_ha_restart_start(vm.pk, attempt=restart.attempts + 1)
        except ActionRefused as exc:
            HaRestart.objects.filter(pk=restart.pk).update(attempts=F("attempts") + 1)
            restart.attempts += 1
            _attempt_failed(restart, vm, str(exc), counted=True)
            return 0
        HaRestart.objects.filter(pk=restart.pk).update(job=job, attempts=F("attempts") + 1)
        return 1


def _attempt_failed(restart: HaRestart, vm: VirtualMachine, error: str, counted=False) -> None:
    """A try failed: again later, or, after the last try, give up with an Event."""
    tries = int(config_get("MaxNumOfTriesToRunFailedAutoStartVm"))
    attempts = restart.attempts
    if attempts >= tries:
        _ended(
            restart,
            vm,
            severity=Severity.ERROR,
            message=f"Failed to restart Highly Available VM {vm.name} after {attempts} "
            f"tries; it stays Down. Last error: {error}"[:1000],
        )
        return
    later = _next_attempt(attempts)
    HaRestart.objects.filter(pk=restart.pk).update(
        job=None, next_attempt_at=later, last_error=error[:2000]
    )
    wait = max(0, round((later - timezone.now()).total_seconds()))
    event_record(
        action="ha_restart",
        phase=Phase.FAILED,
        vm=vm,
        severity=Severity.WARNING,
        error=error,
        message=f"Failed to start Highly Available VM {vm.name} (try {attempts} of {tries}). "
        f"Attempting to restart in {wait} s. {error}"[:1000],
    )


def vm_ha_restart_start(vm_id: int, *, attempt: int = 1) -> Job:
    """Start a Highly Available VM that went Down on the host the scheduler gives for an HA
    restart (a Run asked by the system); ActionRefused (NoHostAvailable) when it cannot."""
    queue_ensure_available()
    with transaction.atomic():
        vm = vm_load(vm_id)
        disks_storage_check(vm, "restart")
        try:
            host = schedule(vm, purpose=Purpose.HA_RESTART)
        except NoHostAvailable as exc:
            raise ActionRefused(f"No host is available: {exc}") from None
        params = {"ha_restart": True, **(vm_place_on(vm, host) or {})}
        return vm_begin(
            vm=vm,
            action=VMAction.RUN,
            user=None,
            params=params,
            message=f"Restarting Highly Available VM {vm.name} on host {host.name}"
            + (f" (try {attempt})." if attempt > 1 else "."),
        )


# -- host loss ------------------------------------------------------------------------------

# VMs left on a host known to be down: a guest at rest keeps what it is (Suspended keeps its
# saved memory); a VM whose disks are being made is its job's.
KEPT = (VMStatus.DOWN, VMStatus.SUSPENDED, VMStatus.IMAGE_LOCKED)


def host_vms_released(host: Host, *, why: str) -> list[VirtualMachine]:
    """The host is known to be down (fenced, or confirmed rebooted): every VM it was running
    is Down, and the Highly Available ones are queued for a restart (the watcher takes them
    in priority order). Returns the VMs moved Down."""
    moved = []
    vms = VirtualMachine.objects.filter(host=host).exclude(status__in=KEPT)
    for vm in vms.select_related("cluster", "host").order_by("-priority", "name"):
        if not VirtualMachine.objects.filter(pk=vm.pk, status=vm.status).update(
            status=VMStatus.DOWN,
            status_changed_at=timezone.now(),
            started_at=None,
            migrating_to=None,
        ):
            continue  # changed meanwhile
        previous = VMStatus(vm.status).label
        vm.status = VMStatus.DOWN
        moved.append(vm)
        event_record(
            action="status",
            phase=Phase.DETECTED,
            vm=vm,
            host=host,
            message=f"VM {vm.name} is now Down (was {previous}): {why}.",
        )
        broadcast(f"vm.{vm.pk}")
        if vm.highly_available and not vm.is_external:
            ha_restart_queue(vm, host=host, why=why)
    return moved


def host_answers(host: Host, timeout: float | None = None) -> str:
    """ "" when the host cannot be reached now; else what it answered (its domain count)."""
    timeout = settings.VIREO_HOST_CONNECT_TIMEOUT if timeout is None else timeout
    try:
        conn = hypervisor.connect(host.uri, timeout=timeout)
        domains = conn.list_domains()
    except (hypervisor.HypervisorError, OSError):
        return ""
    return f"it answers at {host.uri} ({len(domains)} domains)"


def host_reboot_confirm(*, host_id: int, user) -> list[VirtualMachine]:
    """Confirm 'Host has been Rebooted': an administrator vouches that a Non Responsive host
    is down (rebooted or off), so its VMs are no longer running there: they go Down and the
    Highly Available ones are restarted elsewhere. Refused for a host that is not Non
    Responsive, or that answers when asked now. Returns the VMs moved Down."""
    entry = HOST_ACTIONS["confirm_rebooted"]
    host = Host.objects.select_related("cluster").filter(pk=host_id).first()
    if host is None:
        raise ActionRefused("That host does not exist any more.")
    what = f"Cannot confirm that host {host.name} has been rebooted"
    if host.status == HostStatus.UP:
        raise ActionRefused(f"{what}: it is Up and answers. Nothing was done.")
    if not entry.allows(host.status):
        raise ActionRefused(
            f"{what}: it is {host.get_status_display()}; only a Non Responsive host can be "
            "confirmed rebooted. Nothing was done."
        )
    answer = host_answers(host)  # outside the lock: a silent host takes its timeout
    if answer:
        raise ActionRefused(
            f"{what}: {answer}, so it is not down. The monitor will mark it Up. Nothing was done."
        )
    with transaction.atomic():
        locked = Host.objects.select_for_update().filter(pk=host.pk).first()
        if locked is None or locked.status != HostStatus.NON_RESPONSIVE:
            now = HostStatus(locked.status).label if locked else "removed"
            raise ActionRefused(f"{what}: it is now {now}. Nothing was done.")
        Host.objects.filter(pk=host.pk).update(fenced_at=timezone.now())
        event_record(
            action="host_confirm_rebooted",
            phase=Phase.SUCCEEDED,
            user=user,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            severity=Severity.WARNING,
            message=f"{actor(user)} confirmed that host {host.name} has been rebooted: its "
            "virtual machines are Down and the Highly Available ones are restarted elsewhere.",
        )
        moved = host_vms_released(host, why=f"host {host.name} was confirmed rebooted")
        broadcast("hosts", f"host.{host.pk}", "vms")
    return moved
