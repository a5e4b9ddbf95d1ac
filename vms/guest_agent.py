"""The guest agent's data: what the monitor reads from each running VM's qemu-guest-agent
(IP addresses, FQDN, OS and kernel, time zone, logged-in users) and keeps on the VM's
GuestAgentReport, pushed live like every other VM field. Pages only read the stored report:
libvirt is never asked on a page request.

A host's VMs are asked in one pass of their own (Monitor.agents_cycle), oldest report first and
at most VIREO_AGENT_POLL_BATCH of them per pass: a silent agent costs its short timeout
(hypervisor.agent.AGENT_TIMEOUT) in that pass, never in the host's poll.
"""

import logging

from django.conf import settings
from django.db.models import F
from django.utils import timezone

import hypervisor
from portal.kernel.live import broadcast

from .choices import RUNNING_STATUSES, VMStatus
from .models import GuestAgentReport, Host, VirtualMachine

log = logging.getLogger(__name__)

# The statuses in which a guest's agent is asked: the guest runs its own code (not Paused, not
# Not Responding, where a silent agent would only cost its timeout on every pass).
AGENT_STATUSES = frozenset(
    {VMStatus.UP, VMStatus.POWERING_UP, VMStatus.REBOOT_IN_PROGRESS, VMStatus.POWERING_DOWN}
)
TEXT_MAX = {"fqdn": 255, "os_name": 255, "kernel": 255, "architecture": 32, "timezone": 64}


def _clip(text: str, field: str) -> str:
    # What a guest reports is the guest's to choose: no control characters, bounded length.
    cleaned = "".join(ch for ch in str(text) if ch.isprintable())
    return cleaned[: TEXT_MAX[field]]


def report_fields(info: hypervisor.GuestAgentInfo | None) -> dict:
    """The GuestAgentReport fields for what an agent reported (None: no agent answered)."""
    if info is None:
        return {
            "answering": False,
            "ip_addresses": [],
            "fqdn": "",
            "os_name": "",
            "kernel": "",
            "architecture": "",
            "timezone": "",
            "users": [],
        }
    return {
        "answering": True,
        "ip_addresses": [ip[:64] for ip in info.ip_addresses[:64]],
        "fqdn": _clip(info.hostname, "fqdn"),
        "os_name": _clip(info.os_name, "os_name"),
        "kernel": _clip(info.kernel_release, "kernel"),
        "architecture": _clip(info.machine, "architecture"),
        "timezone": _clip(info.timezone, "timezone"),
        "users": sorted({"".join(c for c in str(u) if c.isprintable())[:255] for u in info.users}),
    }


def guest_report_apply(vm_id: int, info: hypervisor.GuestAgentInfo | None) -> bool:
    """Store what the VM's agent reported now; broadcast the VM only when something changed
    (its report time moves quietly). True if it changed."""
    fields = report_fields(info)
    now = timezone.now()
    report, created = GuestAgentReport.objects.get_or_create(
        vm_id=vm_id, defaults={**fields, "reported_at": now}
    )
    changed = created and fields["answering"]
    if not created:
        changed = any(getattr(report, k) != v for k, v in fields.items())
        GuestAgentReport.objects.filter(pk=report.pk).update(**fields, reported_at=now)
    if changed:
        broadcast(f"vm.{vm_id}")
    return changed


def stopped_reports_clear(host: Host) -> int:
    """A VM of the host that stopped running has no agent any more: its report says so."""
    stale = GuestAgentReport.objects.filter(vm__host=host, answering=True).exclude(
        vm__status__in=RUNNING_STATUSES
    )
    ids = list(stale.values_list("vm_id", flat=True))
    if ids:
        GuestAgentReport.objects.filter(vm_id__in=ids).update(**report_fields(None))
        for vm_id in ids:
            broadcast(f"vm.{vm_id}")
    return len(ids)


def host_agents_refresh(
    host: Host, conn: hypervisor.Connection, *, limit: int | None = None
) -> int:
    """Ask the agents of the host's running VMs (those asked longest ago first, at most
    `limit`) and store what they report; returns how many reports changed."""
    stopped_reports_clear(host)
    limit = limit or settings.VIREO_AGENT_POLL_BATCH
    vms = (
        VirtualMachine.objects.filter(host=host, status__in=AGENT_STATUSES)
        .order_by(F("guest__reported_at").asc(nulls_first=True), "pk")
        .values_list("pk", "uuid")[:limit]
    )
    changed = 0
    for vm_id, uuid in vms:
        try:
            info = conn.guest_agent_info(str(uuid))
        except hypervisor.DomainNotFound:
            continue  # gone meanwhile: the host's poll settles it
        changed += guest_report_apply(vm_id, info)
    return changed


def snapshot_guest_record(vm: VirtualMachine) -> dict:
    """What a snapshot keeps of the agent's report when it is taken (empty: none answered).
    qemu-guest-agent reports no installed applications: `applications` stays None, which the
    Installed Applications sub-tab says in so many words."""
    report = GuestAgentReport.objects.filter(vm=vm, answering=True).first()
    if report is None or vm.status not in RUNNING_STATUSES:
        return {}
    return {
        "os_name": report.os_name,
        "kernel": report.kernel,
        "architecture": report.architecture,
        "fqdn": report.fqdn,
        "reported_at": report.reported_at.isoformat() if report.reported_at else "",
        "applications": None,
    }
