"""What a job could not take off a host because the host was not Up: a storage domain's pool
(Detach, Remove) or a logical network's libvirt network (Remove). The job records one
`HostLeftover` per host it skipped; when the monitor next finds that host Up it takes the
definition off (a pool is stopped and undefined with its data kept; an NFS mount point Vireo
made is removed) and records an Event. Nothing else is ever taken off a host: only names
recorded here, and only while no domain or network of the host's data center wants them again.
"""

import logging

import hypervisor
from portal.kernel.audit import event_record
from portal.kernel.models import Phase
from storage.choices import DOMAIN_BUSY_STATUSES, StorageDomainStatus
from storage.models import StorageDomain

from .choices import HostStatus
from .models import Host, HostLeftover, Network

log = logging.getLogger(__name__)


def leftovers_record(
    *, data_center_id: int, kind: str, name: str, what: str, shared: bool = False
) -> list[str]:
    """Record `name` as left on every host of the data center that is not Up now (the job
    works on the Up ones); the names of those hosts."""
    hosts = Host.objects.filter(cluster__data_center_id=data_center_id).exclude(
        status=HostStatus.UP
    )
    for host in hosts:
        HostLeftover.objects.update_or_create(
            host=host, kind=kind, name=name, defaults={"what": what[:1000], "shared": shared}
        )
    return [h.name for h in hosts]


def _state(host: Host, leftover: HostLeftover) -> str:
    """ "wanted": the name is in use again on the host's data center (re-attached, made
    again), so it stays on the host; "busy": a job is moving the domain now, ask again at the
    next poll; "left": nothing wants it, it may go."""
    data_center_id = host.cluster.data_center_id
    if leftover.kind == HostLeftover.NETWORK:
        pk = leftover.name.removeprefix("vireo-")
        wanted = pk.isdigit() and Network.objects.filter(pk=pk, data_center_id=data_center_id)
        return "wanted" if wanted and wanted.exists() else "left"
    domains = StorageDomain.objects.filter(pool_name=leftover.name)
    if domains.filter(status__in=DOMAIN_BUSY_STATUSES).exists():
        return "busy"
    here = domains.filter(data_center_id=data_center_id).exclude(
        status=StorageDomainStatus.UNATTACHED
    )
    return "wanted" if here.exists() else "left"


def host_leftovers_clear(host: Host, conn: hypervisor.Connection) -> int:
    """Take off an Up host what was recorded as left on it; how many were taken off. A
    definition already gone counts as done; a failure stays recorded for the next poll."""
    done = 0
    for leftover in HostLeftover.objects.filter(host=host).order_by("pk"):
        state = _state(host, leftover)
        if state == "busy":
            continue
        if state == "wanted":
            leftover.delete()
            continue
        try:
            if leftover.kind == HostLeftover.POOL:
                conn.pool_remove(leftover.name, wipe=False, delete_target=leftover.shared)
            else:
                conn.remove_network(leftover.name)
        except (hypervisor.PoolNotFound, hypervisor.NetworkNotFound):
            pass
        except hypervisor.HypervisorError as exc:
            log.warning("%s not taken off host %s yet: %s", leftover, host.name, exc)
            continue
        leftover.delete()
        done += 1
        event_record(
            action="host_leftover_removed",
            phase=Phase.SUCCEEDED,
            message=f"{leftover.what} was taken off host {host.name}, which was not Up when "
            "it was detached or removed.",
            host=host,
            object_type="host",
            object_name=host.name,
        )
    return done
