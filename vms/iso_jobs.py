"""What RQ workers do for ISO images: stream an upload's staging file into a new volume of the
ISO domain's pool on its hosts (libvirt's volume upload stream), and remove an image's volume.

An upload that fails anywhere leaves nothing: the host being written deletes its half volume
(hypervisor.Connection.upload_volume), the hosts already written lose their copy, and on_fail
takes the row and the staging file away."""

from django.conf import settings
from django.utils import timezone

import hypervisor
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind
from portal.kernel.tasks import Outcome, job_handler, job_progress
from storage.choices import IsoImageStatus
from storage.isos import staging_path, staging_remove
from storage.models import IsoImage, StorageDomainHost
from storage.space import domain_space_refresh

from .choices import HostStatus
from .isos import OBJECT_TYPE, space_check, target_pools

PROGRESS_BROADCAST_SECONDS = 1.0


def _name(job: Job) -> str:
    name = IsoImage.objects.filter(pk=job.params.get("image_id")).values_list("name", flat=True)
    return name.first() or job.description.split(" ")[1]


def _connect(host) -> hypervisor.Connection:
    return hypervisor.connect(host.uri, timeout=settings.VIREO_HOST_CONNECT_TIMEOUT)


def _upload_failed(job: Job, message: str) -> None:
    """No half image stays: the row (still Locked) and its staging file go."""
    image = IsoImage.objects.filter(pk=job.params["image_id"]).first()
    if image is None:
        return
    IsoImage.objects.filter(pk=image.pk, status=IsoImageStatus.LOCKED).delete()
    staging_remove(image.upload_id)
    broadcast("storage")


def _progress(job: Job, n: int, count: int, host_name: str):
    last = [0.0]

    def report(done: int, total: int) -> None:
        share = done / total if total else 1.0
        percent = 2 + int(96 * (n + share) / count)
        job_progress(job, percent, f"Writing to {host_name}: {done >> 20} of {total >> 20} MiB")
        now = timezone.now().timestamp()
        if now - last[0] >= PROGRESS_BROADCAST_SECONDS or done == total:
            last[0] = now
            broadcast("storage")  # the Images list shows the job's progress

    return report


@job_handler(
    JobKind.ISO_UPLOAD,
    action="upload_iso_image",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to upload {_name(job)}.",
    on_fail=_upload_failed,
    first_step=(2, "Writing the image to the pool"),
)
def iso_upload_job(job: Job) -> Outcome:
    image = IsoImage.objects.select_related("domain").get(pk=job.params["image_id"])
    domain = image.domain
    source = staging_path(image.upload_id)
    if not source.exists() or source.stat().st_size != image.size_bytes:
        raise ActionRefused(f"The staged upload of {image.name} is missing or incomplete.")
    space_check(domain, image.size_bytes, image.name)
    rows = target_pools(domain)
    written: list[tuple[hypervisor.Connection, str]] = []
    try:
        for n, row in enumerate(rows):
            conn = _connect(row.host)
            pool = conn.get_pool(domain.pool_name)
            if pool.available < image.size_bytes:
                raise ActionRefused(
                    f"Storage domain {domain.name} has no room for {image.name} on host "
                    f"{row.host.name} any more ({pool.available} bytes free)."
                )
            conn.upload_volume(
                domain.pool_name,
                image.name,
                str(source),
                progress=_progress(job, n, len(rows), row.host.name),
            )
            written.append((conn, row.host.name))
    except BaseException:
        for conn, _host in written:
            try:
                conn.delete_volume(domain.pool_name, image.name)
            except hypervisor.HypervisorError:
                pass
        raise
    staging_remove(image.upload_id)

    def last_writes() -> None:
        IsoImage.objects.filter(pk=image.pk).update(
            status=IsoImageStatus.OK, upload_id=None, uploaded_bytes=image.size_bytes
        )
        domain_space_refresh(domain.pk)
        broadcast("storage")

    hosts = ", ".join(host for _conn, host in written)
    return Outcome(
        message=f"{image.name} was uploaded to storage domain {domain.name} ({hosts}).",
        event={"object_name": image.name, "vm": None},
        last_writes=last_writes,
    )


def _remove_failed(job: Job, message: str) -> None:
    IsoImage.objects.filter(pk=job.params["image_id"], status=IsoImageStatus.LOCKED).update(
        status=job.params.get("from_status") or IsoImageStatus.OK
    )
    broadcast("storage")


@job_handler(
    JobKind.ISO_REMOVE,
    action="remove_iso_image",
    object_type=OBJECT_TYPE,
    failed=lambda job, vm: f"Failed to remove {_name(job)}.",
    on_fail=_remove_failed,
    first_step=(5, "Removing the image"),
)
def iso_remove_job(job: Job) -> Outcome:
    image = IsoImage.objects.select_related("domain").get(pk=job.params["image_id"])
    domain = image.domain
    rows = list(
        StorageDomainHost.objects.filter(domain=domain, host__status=HostStatus.UP)
        .select_related("host")
        .order_by("pk")
    )
    if domain.shared:
        rows = target_pools(domain)
    errors = []
    for n, row in enumerate(rows):
        job_progress(job, 5 + 90 * n // max(1, len(rows)), f"Removing from {row.host.name}")
        try:
            _connect(row.host).delete_volume(domain.pool_name, image.name)
        except (hypervisor.VolumeNotFound, hypervisor.PoolNotFound):
            continue
        except hypervisor.HypervisorError as exc:
            errors.append(f"{row.host.name}: {exc}")
    if errors:
        raise ActionRefused(
            f"{image.name} could not be removed from every host. " + "; ".join(errors)
        )
    staging_remove(image.upload_id)

    def last_writes() -> None:
        IsoImage.objects.filter(pk=image.pk).delete()
        domain_space_refresh(domain.pk)
        broadcast("storage")

    return Outcome(
        message=f"{image.name} was removed from storage domain {domain.name}.",
        event={"object_name": image.name, "vm": None},
        last_writes=last_writes,
    )
