"""Quota: per-user limits on the VMs a user creates and the disk space of their disks.

A user's VMs are those they created (New VM, Clone VM, clone from a snapshot); their disk
space is the sum of those VMs' disk sizes. The limits are the user's own Quota row where it
sets them, else the VIREO_QUOTA_* settings; SuperUsers are never limited. New VM and both
clones check the quota under a lock on the user's row, so two requests cannot both take the
last VM of a quota.
"""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Sum

from accounts.models import System
from accounts.permissions import can
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Phase
from storage.models import Disk

from .models import Quota, VirtualMachine

GiB = 1024**3
LIMIT_RANGE = (0, 1_000_000)


@dataclass(frozen=True)
class QuotaUsage:
    """What a user uses and may use (None: no limit)."""

    vms: int
    disk_bytes: int
    max_vms: int | None
    max_disk_gib: int | None

    @property
    def disk_gib(self) -> float:
        return self.disk_bytes / GiB


def quota_limits(user) -> tuple[int | None, int | None]:
    """The user's (max VMs, max disk GiB): their own quota, else the settings' defaults."""
    if user is None or not user.is_authenticated or user.is_superuser:
        return None, None
    own = Quota.objects.filter(user=user).first()
    max_vms = own.max_vms if own and own.max_vms is not None else settings.VIREO_QUOTA_MAX_VMS
    max_gib = (
        own.max_disk_gib
        if own and own.max_disk_gib is not None
        else settings.VIREO_QUOTA_MAX_DISK_GIB
    )
    return max_vms, max_gib


def quota_usage(user) -> QuotaUsage:
    """How many VMs the user created that still exist, and the size of their disks."""
    vms = VirtualMachine.objects.filter(created_by=user).aggregate(n=Count("pk"))["n"]
    disk = Disk.objects.filter(vm__created_by=user).aggregate(s=Sum("size_bytes"))["s"] or 0
    return QuotaUsage(vms, disk, *quota_limits(user))


def quota_check(user, *, disk_bytes: int, vms: int = 1) -> None:
    """Refuse a creation that would take the user over their quota. Call inside the creating
    transaction: the user's row stays locked until it commits."""
    max_vms, max_gib = quota_limits(user)
    if max_vms is None and max_gib is None:
        return
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    usage = quota_usage(user)
    if max_vms is not None and usage.vms + vms > max_vms:
        raise ActionRefused(
            f"Quota exceeded: {user.get_username()} may have at most {max_vms} VM(s) and has "
            f"{usage.vms}. Remove a VM or ask an administrator for a larger quota."
        )
    if max_gib is not None and usage.disk_bytes + disk_bytes > max_gib * GiB:
        raise ActionRefused(
            f"Quota exceeded: the disks would need {disk_bytes / GiB:,.1f} GiB, and "
            f"{user.get_username()} uses {usage.disk_gib:,.1f} of {max_gib:,} GiB. Remove disks "
            "or ask an administrator for a larger quota."
        )


def _limit(value, label: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ActionRefused(f"{label} must be a whole number, or empty for the default.") from None
    low, high = LIMIT_RANGE
    if not low <= value <= high:
        raise ActionRefused(f"{label} must be between {low:,} and {high:,}, or empty.")
    return value


def quota_set(*, user, target_user_id: int, max_vms=None, max_disk_gib=None) -> Quota | None:
    """Set (or, with both limits empty, remove) a user's own quota. Needs the system-wide
    right to configure (manage_roles on System)."""
    if not can(user, "manage_roles", System.get()):
        raise ActionRefused("You may not change quotas.")
    max_vms = _limit(max_vms, "VMs")
    max_disk_gib = _limit(max_disk_gib, "Disk space (GiB)")
    with transaction.atomic():
        target = get_user_model().objects.filter(pk=target_user_id, is_active=True).first()
        if target is None:
            raise ActionRefused("That user does not exist any more.")
        if max_vms is None and max_disk_gib is None:
            Quota.objects.filter(user=target).delete()
            quota = None
            what = "the default quota"
        else:
            quota, _ = Quota.objects.update_or_create(
                user=target, defaults={"max_vms": max_vms, "max_disk_gib": max_disk_gib}
            )
            what = (
                f"a quota of {'no limit' if max_vms is None else max_vms} VM(s) and "
                f"{'no limit' if max_disk_gib is None else f'{max_disk_gib:,} GiB'} of disk space"
            )
        event_record(
            action="edit_quota",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="user",
            object_name=target.get_username(),
            message=f"{actor(user)} gave {target.get_username()} {what}.",
        )
    return quota
