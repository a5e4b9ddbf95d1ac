"""Reads behind the Storage tab, restricted to what the user may see."""

from django.db.models import QuerySet

from .models import Disk, StorageDomain, StorageDomainHost


def domain_list(user) -> QuerySet:
    """Storage domains the user may see as storage (view_storage), by name."""
    domains = StorageDomain.objects.select_related("data_center").restrict(user, "view_storage")
    return domains.order_by("name", "pk")


def domain_pools(domain: StorageDomain) -> list[StorageDomainHost]:
    """The domain's pool on each host (status, that host's error, its space), by host name;
    for the selected domain only, which the caller has read through the restricted list."""
    return list(
        StorageDomainHost.objects.filter(domain=domain)
        .select_related("host")
        .order_by("host__name")
    )


def disk_list(user, *, floating: bool = False) -> QuerySet:
    """Disks the user may see, each with its VM (or floating only), by alias."""
    disks = Disk.objects.select_related("vm", "storage_domain", "host").restrict(user, "view")
    if floating:
        disks = disks.filter(vm__isnull=True)
    return disks.order_by("alias", "pk")
