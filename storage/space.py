"""A storage domain's space and status from its pools on each host (StorageDomainHost).

Each host's pool has its own row; the domain's own figures are derived from those rows, never
written by a host: an NFS domain (one shared export) shows its pool's figures as last read by
any host where it is Active; a local domain (a directory of each host's own) shows the sum over
the hosts where it is Active, and each host's figures are on its row."""

from django.db.models import Sum

from portal.kernel.live import broadcast

from .choices import DOMAIN_IN_USE_STATUSES, PoolStatus, StorageDomainStatus
from .models import StorageDomain, StorageDomainHost

BIGINT_MAX = 2**63 - 1


def pool_figures(capacity: int, allocation: int, available: int) -> dict:
    """A pool's sizes as the rows keep them. A pool can report more allocated than its
    capacity (sparse volumes, or the test driver's fixed 100 GiB): free space is then none,
    not a wrapped-around huge number."""
    return {
        "total_bytes": min(capacity, BIGINT_MAX),
        "used_bytes": min(allocation, BIGINT_MAX),
        "free_bytes": max(0, min(available, capacity - allocation, BIGINT_MAX)),
    }


def domain_space_refresh(domain_id: int) -> bool:
    """Derive the domain's figures, and for a domain in use its Active / Inactive status, from
    its rows per host; write only what changed (True if anything did)."""
    domain = StorageDomain.objects.filter(pk=domain_id).first()
    if domain is None:
        return False
    rows = StorageDomainHost.objects.filter(domain_id=domain_id)
    active = rows.filter(status=PoolStatus.ACTIVE)
    if domain.shared:
        newest = active.order_by("-updated_at", "-pk").first()
        fields = {
            "total_bytes": newest.total_bytes if newest else 0,
            "used_bytes": newest.used_bytes if newest else 0,
            "free_bytes": newest.free_bytes if newest else 0,
        }
    else:
        sums = active.aggregate(
            total=Sum("total_bytes"), used=Sum("used_bytes"), free=Sum("free_bytes")
        )
        fields = {
            "total_bytes": min(sums["total"] or 0, BIGINT_MAX),
            "used_bytes": min(sums["used"] or 0, BIGINT_MAX),
            "free_bytes": min(sums["free"] or 0, BIGINT_MAX),
        }
    changed = False
    if any(getattr(domain, k) != v for k, v in fields.items()):
        changed |= bool(StorageDomain.objects.filter(pk=domain_id).update(**fields))
    if domain.status in DOMAIN_IN_USE_STATUSES and rows.exists():
        status = StorageDomainStatus.ACTIVE if active.exists() else StorageDomainStatus.INACTIVE
        if status != domain.status:
            # Only from a status in use: a job that took the domain meanwhile keeps it.
            changed |= bool(
                StorageDomain.objects.filter(
                    pk=domain_id, status__in=DOMAIN_IN_USE_STATUSES
                ).update(status=status)
            )
    if changed:
        broadcast("storage")
    return changed


def free_bytes_on(domain: StorageDomain, host_id: int | None) -> int:
    """The free space a new volume of the domain on `host_id` can use: that host's own pool
    for a local domain (another host's free space is of no use there), the domain's for NFS or
    when the host's pool has not been read yet."""
    if not domain.shared and host_id is not None:
        row = (
            StorageDomainHost.objects.filter(domain=domain, host_id=host_id)
            .values_list("free_bytes", flat=True)
            .first()
        )
        if row is not None:
            return row
    return domain.free_bytes


def unusable_on(domain: StorageDomain, host_id: int | None) -> str:
    """Why a new disk of the domain cannot go on `host_id` (its pool there is Inactive, with
    that host's error), or "" when it can or the host's pool has not been read yet."""
    if host_id is None:
        return ""
    row = StorageDomainHost.objects.filter(domain=domain, host_id=host_id).select_related("host")
    row = row.first()
    if row is None or row.status == PoolStatus.ACTIVE:
        return ""
    return f"Storage domain {domain.name} is Inactive on host {row.host.name}" + (
        f": {row.error}" if row.error else "."
    )
