"""What RQ workers do for storage domains: set a domain's pool up on hosts, stop it, take it
off them. Each host's outcome is written on its own row (StorageDomainHost) as it comes, so
a host that fails (a missing or read-only path, an NFS server that does not answer, a host
that drops) leaves the domain Inactive there with that host's error while the others go on.
A job fails only when no host could do it; its on_fail never leaves the domain busy."""

from django.conf import settings
from django.utils import timezone

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import Outcome, job_handler, job_progress
from storage.choices import (
    DOMAIN_BUSY_STATUSES,
    DOMAIN_IN_USE_STATUSES,
    PoolStatus,
    StorageDomainStatus,
)
from storage.models import StorageDomain, StorageDomainHost
from storage.space import domain_space_refresh, pool_figures

from .choices import HostStatus
from .domains import OBJECT_TYPE, domain_status_restore
from .leftovers import leftovers_record
from .models import Host, HostLeftover

SD = StorageDomainStatus


def pool_spec(domain: StorageDomain) -> hypervisor.PoolSpec:
    """The libvirt pool of the domain on every host."""
    if domain.shared:
        return hypervisor.PoolSpec(
            name=domain.pool_name,
            type="netfs",
            path=domain.target_path,
            source_host=domain.nfs_server,
            source_dir=domain.path,
            mount_options=tuple(settings.VIREO_NFS_MOUNT_OPTIONS),
        )
    return hypervisor.PoolSpec(name=domain.pool_name, type="dir", path=domain.target_path)


def _connect(host: Host) -> hypervisor.Connection:
    return hypervisor.connect(host.uri, timeout=settings.VIREO_HOST_CONNECT_TIMEOUT)


def _up_hosts(data_center_id: int) -> list[Host]:
    return list(
        Host.objects.filter(cluster__data_center_id=data_center_id, status=HostStatus.UP).order_by(
            "name", "pk"
        )
    )


def _row_write(domain: StorageDomain, host: Host, **fields) -> None:
    StorageDomainHost.objects.update_or_create(
        domain=domain, host=host, defaults={**fields, "updated_at": timezone.now()}
    )
    broadcast("storage")


def _name(job: Job) -> str:
    name = (
        StorageDomain.objects.filter(pk=job.params.get("domain_id"))
        .values_list("name", flat=True)
        .first()
    )
    return name or job.description.rpartition(" ")[2]


def host_pool_setup(domain: StorageDomain, host: Host) -> str:
    """Set the domain's pool up on one host and write its row; the host's error, or ""."""
    try:
        conn = _connect(host)
        if not domain.managed:
            conn.get_pool(domain.pool_name)  # a pool made outside Vireo is never defined here
        pool = conn.pool_setup(pool_spec(domain), build=domain.shared)
    except hypervisor.HypervisorError as exc:
        error = str(exc) or exc.__class__.__name__
        _row_write(domain, host, status=PoolStatus.INACTIVE, error=error, setup_failed=True)
        return error
    _row_write(
        domain,
        host,
        status=PoolStatus.ACTIVE if pool.active else PoolStatus.INACTIVE,
        error="",
        setup_failed=False,
        **pool_figures(pool.capacity, pool.allocation, pool.available),
    )
    return ""


def _set_up_on(job: Job, domain: StorageDomain, hosts: list[Host]) -> dict[str, str]:
    """Set the pool up on each host in turn (progress per host); host name -> error."""
    errors = {}
    for n, host in enumerate(hosts):
        job_progress(job, 5 + 90 * n // max(1, len(hosts)), f"Setting the pool up on {host.name}")
        error = host_pool_setup(domain, host)
        if error:
            errors[host.name] = error
    return errors


def _summary(errors: dict[str, str]) -> str:
    return "; ".join(f"{host}: {error}" for host, error in errors.items())


def _none_could(domain: StorageDomain, hosts: list[Host], errors: dict[str, str], verb: str):
    if not hosts:
        raise ActionRefused(
            f"No host of the data center is Up: storage domain {domain.name} could not be {verb}."
        )
    if len(errors) == len(hosts):
        raise ActionRefused(
            f"Storage domain {domain.name} could not be {verb} on any host. {_summary(errors)}"
        )


def _inactive_on(errors: dict[str, str]) -> str:
    return f" It is Inactive on {_summary(errors)}" if errors else ""


def _pools_take_off(domain: StorageDomain, hosts: list[Host], *, wipe: bool = False) -> dict:
    """Undefine the domain's pool on each host (NFS: unmount, remove the mount point; `wipe`:
    delete its volumes first); host name -> error. A host without the pool is fine."""
    errors = {}
    for host in hosts:
        try:
            _connect(host).pool_remove(domain.pool_name, wipe=wipe, delete_target=domain.shared)
        except hypervisor.PoolNotFound:
            pass
        except hypervisor.HypervisorError as exc:
            errors[host.name] = str(exc) or exc.__class__.__name__
    return errors


def _left_on_hosts_not_up(domain: StorageDomain) -> None:
    """The hosts of the data center that are not Up keep the pool for now: the monitor takes
    it off each of them when it is Up again (vms/leftovers.py)."""
    leftovers_record(
        data_center_id=domain.data_center_id,
        kind=HostLeftover.POOL,
        name=domain.pool_name,
        what=f"The pool of storage domain {domain.name}",
        shared=domain.shared,
    )


def _restore(job: Job, message: str) -> None:
    """Back to the status the domain had before the job, from the busy status it holds."""
    status = (
        StorageDomain.objects.filter(pk=job.params["domain_id"])
        .values_list("status", flat=True)
        .first()
    )
    if status in DOMAIN_BUSY_STATUSES and job.params.get("from_status"):
        domain_status_restore(job.params["domain_id"], status, job.params["from_status"])(job)


# -- New Domain --------------------------------------------------------------------------------


def _create_failed(job: Job, message: str) -> None:
    """Nothing of the domain stays: its pool is undefined where it was defined (its data,
    if any, was never Vireo's), then its rows go."""
    domain = StorageDomain.objects.filter(pk=job.params["domain_id"]).first()
    if domain is None:
        return
    hosts = list(Host.objects.filter(storage_pools__domain=domain))
    _pools_take_off(domain, hosts)
    StorageDomain.objects.filter(pk=domain.pk, status=SD.LOCKED).delete()
    broadcast("storage")


@job_handler(
    JobKind.STORAGE_DOMAIN_CREATE,
    action="add_storage_domain",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to add storage domain {_name(job)}.",
    on_fail=_create_failed,
    first_step=(2, "Setting the pool up"),
)
def storage_domain_create_job(job: Job) -> Outcome:
    domain = StorageDomain.objects.select_related("data_center").get(pk=job.params["domain_id"])
    hosts = _up_hosts(domain.data_center_id)
    errors = _set_up_on(job, domain, hosts)
    _none_could(domain, hosts, errors, "set up")

    def last_writes() -> None:
        StorageDomain.objects.filter(pk=domain.pk, status=SD.LOCKED).update(status=SD.ACTIVE)
        domain_space_refresh(domain.pk)
        broadcast("storage")

    return Outcome(
        message=f"Storage domain {domain.name} was added to data center "
        f"{domain.data_center.name}.{_inactive_on(errors)}",
        event={"object_name": domain.name, "vm": None},
        last_writes=last_writes,
    )


# -- Activate (and a host that joins the data center) ------------------------------------------


def _activate_failed(job: Job, message: str) -> None:
    if job.params.get("from_status"):
        _restore(job, message)
    else:  # set up for one host by the monitor: the host's row says what happened
        domain_space_refresh(job.params["domain_id"])


@job_handler(
    JobKind.STORAGE_DOMAIN_ACTIVATE,
    action="activate_storage_domain",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to activate storage domain {_name(job)}.",
    on_fail=_activate_failed,
    first_step=(2, "Setting the pool up"),
)
def storage_domain_activate_job(job: Job) -> Outcome:
    domain = StorageDomain.objects.get(pk=job.params["domain_id"])
    if "host_ids" in job.params:
        # The monitor's: one host that has not got the pool yet, the domain's status as it is.
        hosts = list(
            Host.objects.filter(pk__in=job.params["host_ids"], status=HostStatus.UP).filter(
                cluster__data_center_id=domain.data_center_id
            )
        )
        if domain.status not in DOMAIN_IN_USE_STATUSES:
            hosts = []  # taken to maintenance (or away) meanwhile: nothing to set up
        errors = _set_up_on(job, domain, hosts)

        def refresh() -> None:
            domain_space_refresh(domain.pk)

        where = ", ".join(h.name for h in hosts) or "no host"
        return Outcome(
            message=f"Storage domain {domain.name} was set up on {where}.{_inactive_on(errors)}",
            event={"object_name": domain.name, "vm": None},
            last_writes=refresh,
        )
    hosts = _up_hosts(domain.data_center_id)
    errors = _set_up_on(job, domain, hosts)
    _none_could(domain, hosts, errors, "activated")

    def last_writes() -> None:
        StorageDomain.objects.filter(pk=domain.pk, status=SD.ACTIVATING).update(status=SD.ACTIVE)
        domain_space_refresh(domain.pk)
        broadcast("storage")

    return Outcome(
        message=f"Storage domain {domain.name} was activated.{_inactive_on(errors)}",
        event={"object_name": domain.name, "vm": None},
        last_writes=last_writes,
    )


# -- Maintenance, Detach, Attach, Remove -------------------------------------------------------


@job_handler(
    JobKind.STORAGE_DOMAIN_MAINTENANCE,
    action="maintenance_storage_domain",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to move storage domain {_name(job)} to maintenance.",
    on_fail=_restore,
)
def storage_domain_maintenance_job(job: Job) -> Outcome:
    domain = StorageDomain.objects.get(pk=job.params["domain_id"])
    hosts = _up_hosts(domain.data_center_id)
    errors = {}
    for n, host in enumerate(hosts):
        job_progress(job, 5 + 90 * n // max(1, len(hosts)), f"Stopping the pool on {host.name}")
        try:
            _connect(host).pool_stop(domain.pool_name)
        except hypervisor.PoolNotFound:
            pass
        except hypervisor.HypervisorError as exc:
            errors[host.name] = str(exc) or exc.__class__.__name__
            continue
        _row_write(domain, host, status=PoolStatus.INACTIVE, error="", setup_failed=False)
    if errors:
        raise ActionRefused(f"The pool could not be stopped on every host. {_summary(errors)}")

    def last_writes() -> None:
        StorageDomainHost.objects.filter(domain=domain).update(status=PoolStatus.INACTIVE)
        StorageDomain.objects.filter(pk=domain.pk, status=SD.PREPARING_FOR_MAINTENANCE).update(
            status=SD.MAINTENANCE
        )
        domain_space_refresh(domain.pk)
        broadcast("storage")

    return Outcome(
        message=f"Storage domain {domain.name} is in maintenance.",
        event={"object_name": domain.name, "vm": None},
        last_writes=last_writes,
    )


@job_handler(
    JobKind.STORAGE_DOMAIN_DETACH,
    action="detach_storage_domain",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to detach storage domain {_name(job)}.",
    on_fail=_restore,
)
def storage_domain_detach_job(job: Job) -> Outcome:
    domain = StorageDomain.objects.select_related("data_center").get(pk=job.params["domain_id"])
    job_progress(job, 10, "Taking the pool off the hosts")
    errors = _pools_take_off(domain, _up_hosts(domain.data_center_id))
    if errors:
        raise ActionRefused(f"The pool could not be taken off every host. {_summary(errors)}")

    def last_writes() -> None:
        _left_on_hosts_not_up(domain)
        StorageDomainHost.objects.filter(domain=domain).delete()
        StorageDomain.objects.filter(pk=domain.pk, status=SD.DETACHING).update(status=SD.UNATTACHED)
        domain_space_refresh(domain.pk)
        broadcast("storage")

    return Outcome(
        message=f"Storage domain {domain.name} was detached from data center "
        f"{domain.data_center.name}.",
        event={"object_name": domain.name, "vm": None},
        last_writes=last_writes,
    )


def _attach_failed(job: Job, message: str) -> None:
    domain = StorageDomain.objects.filter(pk=job.params["domain_id"]).first()
    if domain is not None:
        hosts = list(Host.objects.filter(storage_pools__domain=domain))
        _pools_take_off(domain, hosts)
        StorageDomainHost.objects.filter(domain=domain).delete()
    _restore(job, message)


@job_handler(
    JobKind.STORAGE_DOMAIN_ATTACH,
    action="attach_storage_domain",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to attach storage domain {_name(job)}.",
    on_fail=_attach_failed,
    first_step=(2, "Setting the pool up"),
)
def storage_domain_attach_job(job: Job) -> Outcome:
    domain = StorageDomain.objects.get(pk=job.params["domain_id"])
    target = job.params["data_center_id"]
    hosts = _up_hosts(target)
    errors = _set_up_on(job, domain, hosts)
    _none_could(domain, hosts, errors, "attached")

    def last_writes() -> None:
        StorageDomain.objects.filter(pk=domain.pk, status=SD.LOCKED).update(
            status=SD.ACTIVE, data_center_id=target
        )
        domain_space_refresh(domain.pk)
        broadcast("storage", "datacenters")

    return Outcome(
        message=f"Storage domain {domain.name} was attached.{_inactive_on(errors)}",
        event={"object_name": domain.name, "vm": None},
        last_writes=last_writes,
    )


@job_handler(
    JobKind.STORAGE_DOMAIN_REMOVE,
    action="remove_storage_domain",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to remove storage domain {_name(job)}.",
    on_fail=_restore,
)
def storage_domain_remove_job(job: Job) -> Outcome:
    domain = StorageDomain.objects.get(pk=job.params["domain_id"])
    wipe = bool(job.params.get("format_domain"))
    hosts = (
        [] if job.params.get("from_status") == SD.UNATTACHED else _up_hosts(domain.data_center_id)
    )
    job_progress(job, 10, "Formatting the domain" if wipe else "Taking the pool off the hosts")
    errors = _pools_take_off(domain, hosts, wipe=wipe)
    if errors:
        raise ActionRefused(f"The pool could not be removed from every host. {_summary(errors)}")

    def last_writes() -> None:
        if job.params.get("from_status") != SD.UNATTACHED:
            _left_on_hosts_not_up(domain)
        StorageDomain.objects.filter(pk=domain.pk, status=SD.LOCKED).delete()
        broadcast("storage", "datacenters")

    kept = "its data was deleted" if wipe else "its data was kept"
    return Outcome(
        message=f"Storage domain {domain.name} was removed; {kept}.",
        event={"object_name": domain.name, "vm": None},
        last_writes=last_writes,
    )
