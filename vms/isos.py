"""Services for the images of an ISO domain: Upload (start or resume, each chunk, the job that
writes the pools), Remove, and Mark as Guest Tools / Unmark (the Storage tab's Images).

An upload reserves its image's row first (Locked, with the declared size and a staging file
named by a uuid), so a name is taken once: of two uploads of the same name one wins, the other
is told. Chunks are appended to the staging file on disk (never held whole in memory); when the
last one lands a job streams the file into a new volume of the domain's pool on its hosts
(vms/iso_jobs.py). An upload interrupted in the browser stays Locked with its bytes staged, to
be resumed by uploading the same file again; one left alone for VIREO_UPLOAD_EXPIRY_HOURS is
taken away at the next upload. See docs/iso-domains.md.
"""

import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Job, JobKind, Phase
from portal.kernel.tasks import job_create, queue_ensure_available
from storage.choices import DomainFunction, IsoImageStatus, PoolStatus, StorageDomainStatus
from storage.isos import (
    GUEST_TOOLS_RE,
    ISO_MAGIC_END,
    chunk_append,
    image_name_check,
    iso_domain_check,
    magic_check,
    staging_path,
    staging_remove,
    upload_dir,
)
from storage.models import IsoImage, StorageDomain, StorageDomainHost

from .choices import HostStatus

OBJECT_TYPE = "ISO image"
UPLOAD_JOBS = (JobKind.ISO_UPLOAD, JobKind.ISO_REMOVE)


def _domain(domain_id) -> StorageDomain:
    try:
        domain = StorageDomain.objects.select_related("data_center").get(pk=domain_id)
    except (StorageDomain.DoesNotExist, ValueError, TypeError):
        raise ActionRefused("That storage domain does not exist any more.") from None
    iso_domain_check(domain)
    return domain


def _image(image_id, *, lock: bool = False) -> IsoImage:
    images = IsoImage.objects.select_related("domain")
    if lock:
        images = images.select_for_update(of=("self",))
    try:
        return images.get(pk=image_id)
    except (IsoImage.DoesNotExist, ValueError, TypeError):
        raise ActionRefused("That ISO image does not exist any more.") from None


def image_job(image: IsoImage) -> Job | None:
    """The upload or remove job at work on the image, if any."""
    return (
        Job.objects.filter(kind__in=UPLOAD_JOBS, status__in=Job.ACTIVE, params__image_id=image.pk)
        .order_by("-pk")
        .first()
    )


def images_jobs(images) -> dict[int, Job]:
    """The active upload or remove job of each of these images, by image id (one query)."""
    ids = [image.pk for image in images]
    jobs = Job.objects.filter(
        kind__in=UPLOAD_JOBS, status__in=Job.ACTIVE, params__image_id__in=ids
    ).order_by("pk")
    return {job.params["image_id"]: job for job in jobs}


def chunk_bytes() -> int:
    """The size of the chunks an upload is sent in."""
    return settings.VIREO_UPLOAD_CHUNK_BYTES


def target_pools(domain: StorageDomain) -> list[StorageDomainHost]:
    """Where an upload writes: every Up host where the domain's pool is Active (a Local on Host
    domain is each host's own directory: each gets its copy), or one such host for NFS (the
    one export every host mounts)."""
    rows = list(
        StorageDomainHost.objects.filter(
            domain=domain, status=PoolStatus.ACTIVE, host__status=HostStatus.UP
        )
        .select_related("host")
        .order_by("host__name", "host__pk")
    )
    return rows[:1] if domain.shared else rows


def space_check(domain: StorageDomain, size: int, name: str) -> None:
    """Refuse an upload the domain has no room for on a host it goes to (or no host at all)."""
    pools = target_pools(domain)
    if domain.status != StorageDomainStatus.ACTIVE or not pools:
        raise ActionRefused(
            f"Cannot upload {name}: storage domain {domain.name} is "
            f"{domain.get_status_display()} and its pool is active on no Up host."
        )
    for row in pools:
        if size > row.free_bytes:
            raise ActionRefused(
                f"Cannot upload {name} ({_size(size)}): storage domain {domain.name} has "
                f"{_size(row.free_bytes)} free on host {row.host.name}. Nothing was uploaded."
            )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def uploads_expire() -> int:
    """Take away uploads left alone for VIREO_UPLOAD_EXPIRY_HOURS (their rows and staging
    files) and staging files no row names; the count of uploads taken away."""
    cutoff = timezone.now() - timedelta(hours=settings.VIREO_UPLOAD_EXPIRY_HOURS)
    busy = set(
        Job.objects.filter(kind__in=UPLOAD_JOBS, status__in=Job.ACTIVE).values_list(
            "params__image_id", flat=True
        )
    )
    stale = IsoImage.objects.filter(
        status=IsoImageStatus.LOCKED, upload_id__isnull=False, touched_at__lt=cutoff
    ).exclude(pk__in=[pk for pk in busy if pk is not None])
    gone = 0
    for image in stale:
        if IsoImage.objects.filter(pk=image.pk, touched_at__lt=cutoff).delete()[0]:
            staging_remove(image.upload_id)
            gone += 1
    known = {
        str(u)
        for u in IsoImage.objects.filter(upload_id__isnull=False).values_list(
            "upload_id", flat=True
        )
    }
    for path in Path(upload_dir()).glob("*.iso"):
        try:
            old = path.stat().st_mtime < cutoff.timestamp()
        except FileNotFoundError:
            continue
        if path.stem not in known and old:
            path.unlink(missing_ok=True)
    if gone:
        broadcast("storage")
    return gone


def iso_upload_start(
    *, user, domain_id: int, name: str, size_bytes: int, guest_tools: bool = False
) -> IsoImage:
    """Upload: reserve the image (Locked) and its staging file, after checking the name, the
    declared size against the domain's free space and the task queue; or, for an upload of the
    same name and size left unfinished, hand it back to be resumed from its staged bytes."""
    queue_ensure_available()
    uploads_expire()
    domain = _domain(domain_id)
    name = image_name_check(name)
    try:
        size = int(size_bytes)
    except (TypeError, ValueError):
        raise ActionRefused("The file's size is not a number.") from None
    if size < ISO_MAGIC_END:
        raise ActionRefused(f"{name} is not an ISO image: it is too small ({size} bytes).")
    with transaction.atomic():
        taken = IsoImage.objects.select_for_update().filter(domain=domain, name=name).first()
        resumed = _resumed(taken, user, size) if taken is not None else None
    if resumed is not None:
        if resumed.uploaded_bytes >= resumed.size_bytes:  # all staged, but no job came of it
            iso_upload_finish(user=user, image_id=resumed.pk)
        return resumed
    with transaction.atomic():
        space_check(domain, size, name)
        try:
            with transaction.atomic():
                image = IsoImage.objects.create(
                    domain=domain,
                    name=name,
                    size_bytes=size,
                    guest_tools=bool(guest_tools),
                    status=IsoImageStatus.LOCKED,
                    uploaded_by=user if user is not None and user.is_authenticated else None,
                    upload_id=uuid.uuid4(),
                    uploaded_bytes=0,
                    touched_at=timezone.now(),
                )
        except IntegrityError:
            raise ActionRefused(
                f"An image named {name} is already being uploaded to storage domain "
                f"{domain.name}. Nothing was changed."
            ) from None
        staging_path(image.upload_id).touch()
        event_record(
            action="upload_iso_image",
            phase=Phase.REQUESTED,
            user=user,
            object_type=OBJECT_TYPE,
            object_name=name,
            message=f"{actor(user)} started to upload {name} ({_size(size)}) to storage domain "
            f"{domain.name}.",
        )
    broadcast("storage")
    return image


def _resumed(image: IsoImage, user, size: int) -> IsoImage:
    """The unfinished upload of the same name, to go on with; a refusal otherwise."""
    domain = image.domain
    if image.status == IsoImageStatus.OK:
        raise ActionRefused(
            f"An image named {image.name} already exists in storage domain {domain.name}. "
            "Remove it first or rename the file. Nothing was changed."
        )
    if image.upload_id is None or image_job(image) is not None:
        raise ActionRefused(
            f"{image.name} is being written to (or removed from) storage domain {domain.name}. "
            "Wait for it to end. Nothing was changed."
        )
    if image.size_bytes != size:
        raise ActionRefused(
            f"An unfinished upload of {image.name} ({_size(image.size_bytes)}) is in storage "
            f"domain {domain.name}; this file's size differs. Remove that upload first."
        )
    if image.uploaded_by_id is not None and (user is None or user.pk != image.uploaded_by_id):
        raise ActionRefused(
            f"{image.name} is being uploaded to storage domain {domain.name} by another user."
        )
    staged = staging_path(image.upload_id)
    image.uploaded_bytes = staged.stat().st_size if staged.exists() else 0
    if not staged.exists():
        staged.touch()
    IsoImage.objects.filter(pk=image.pk).update(
        uploaded_bytes=image.uploaded_bytes, touched_at=timezone.now()
    )
    return image


def iso_upload_chunk(*, user, image_id: int, upload_id: str, offset: int, body, length: int):
    """One chunk of an upload appended to its staging file (the first one checked to be an
    ISO), under the image's row lock (a chunk sent twice at once is appended once); with the
    last one, the job that writes the pools. Returns (image, job or None)."""
    with transaction.atomic():
        image = _image(image_id, lock=True)
        if image.upload_id is None or str(image.upload_id) != str(upload_id or ""):
            raise ActionRefused(f"The upload of {image.name} is over or was taken away.")
        if not image.staging:
            raise ActionRefused(f"Every byte of {image.name} was received already.")
        staged = chunk_append(image, int(offset), body, int(length))
        refused = ""
        if int(offset) < ISO_MAGIC_END <= staged:
            try:
                magic_check(staging_path(image.upload_id), image.name)
            except ActionRefused as exc:
                refused = str(exc)
        if not refused:
            IsoImage.objects.filter(pk=image.pk).update(
                uploaded_bytes=staged, touched_at=timezone.now()
            )
            image.uploaded_bytes = staged
    if refused:
        _take_away(image)
        raise ActionRefused(refused)
    if staged < image.size_bytes:
        return image, None
    return image, iso_upload_finish(user=user, image_id=image.pk)


def _take_away(image: IsoImage) -> None:
    IsoImage.objects.filter(pk=image.pk, status=IsoImageStatus.LOCKED).delete()
    staging_remove(image.upload_id)
    broadcast("storage")


def _space_refusal(image: IsoImage) -> str:
    try:
        space_check(image.domain, image.size_bytes, image.name)
    except ActionRefused as exc:
        return str(exc)
    return ""


def iso_upload_finish(*, user, image_id: int) -> Job:
    """Every byte is staged: check the space again and queue the job that streams the staging
    file into a new volume of the pool on the domain's hosts."""
    with transaction.atomic():
        image = _image(image_id, lock=True)
        if image.status != IsoImageStatus.LOCKED or image.upload_id is None:
            raise ActionRefused(f"{image.name} is not being uploaded.")
        if image_job(image) is not None:
            raise ActionRefused(f"{image.name} is being written to the pool already.")
        path = staging_path(image.upload_id)
        if not path.exists() or path.stat().st_size != image.size_bytes:
            raise ActionRefused(f"The upload of {image.name} is not complete.")
        refused = _space_refusal(image)
        if not refused:
            return job_create(
                kind=JobKind.ISO_UPLOAD,
                description=f"Uploading {image.name} to storage domain {image.domain.name}",
                user=user,
                params={"image_id": image.pk, "domain_id": image.domain_id},
                on_enqueue_failure=lambda job: _take_away(image),
            )
    _take_away(image)  # no room any more: the staged file goes, the name is free again
    raise ActionRefused(refused)


def iso_image_remove(*, user, image_id: int) -> Job:
    """Remove: a job deletes the image's volume from the pool on the domain's hosts (an
    unfinished upload: its staging file) and then its row. Refused while a job writes it."""
    queue_ensure_available()
    with transaction.atomic():
        image = _image(image_id, lock=True)
        if image_job(image) is not None:
            raise ActionRefused(
                f"Cannot remove {image.name}: it is being written to the pool. Wait for the "
                "upload to end."
            )
        previous = image.status
        IsoImage.objects.filter(pk=image.pk).update(
            status=IsoImageStatus.LOCKED, touched_at=timezone.now()
        )
        job = job_create(
            kind=JobKind.ISO_REMOVE,
            description=f"Removing {image.name} from storage domain {image.domain.name}",
            user=user,
            params={"image_id": image.pk, "domain_id": image.domain_id, "from_status": previous},
            on_enqueue_failure=lambda job: IsoImage.objects.filter(pk=image.pk).update(
                status=previous
            ),
        )
        event_record(
            action="remove_iso_image",
            phase=Phase.REQUESTED,
            user=user,
            job=job,
            object_type=OBJECT_TYPE,
            object_name=image.name,
            message=f"{actor(user)} asked to remove {image.name} from storage domain "
            f"{image.domain.name}.",
        )
    broadcast("storage")
    return job


def iso_image_guest_tools(*, user, image_id: int, guest_tools: bool) -> IsoImage:
    """Mark as Guest Tools / Unmark: whether Change CD and Run Once offer the image as the
    guest tools ISO (listed first)."""
    with transaction.atomic():
        image = _image(image_id, lock=True)
        if image.domain.domain_function != DomainFunction.ISO:
            raise ActionRefused(f"{image.name} is not in an ISO domain.")
        if image.guest_tools == bool(guest_tools):
            state = "marked" if guest_tools else "not marked"
            raise ActionRefused(f"{image.name} is {state} as guest tools already.")
        IsoImage.objects.filter(pk=image.pk).update(guest_tools=bool(guest_tools))
        image.guest_tools = bool(guest_tools)
        verb = "marked" if guest_tools else "unmarked"
        event_record(
            action="guest_tools_iso_image",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type=OBJECT_TYPE,
            object_name=image.name,
            message=f"{actor(user)} {verb} {image.name} as guest tools.",
        )
    broadcast("storage")
    return image


def iso_images_sync(domain: StorageDomain, host, volumes) -> None:
    """The monitor's: record the `.iso` volumes of an ISO domain's pool on `host` that were put
    there outside Vireo (a `virtio-win*.iso` is offered as guest tools at once), and drop the
    rows of images whose volume is gone. A Local on Host domain's image goes only when the
    host read is the last Up host with the pool active (each host has its own copy); an image
    being uploaded or removed is left to its job."""
    present = {v.name: v for v in volumes if v.name.lower().endswith(".iso")}
    known = {i.name: i for i in IsoImage.objects.filter(domain=domain)}
    changed = False
    for name, vol in present.items():
        if name in known:
            continue
        try:
            name = image_name_check(name)
        except ActionRefused:
            continue  # a name Vireo would not accept: not offered
        try:
            with transaction.atomic():
                IsoImage.objects.create(
                    domain=domain,
                    name=name,
                    size_bytes=vol.capacity,
                    uploaded_bytes=vol.capacity,
                    guest_tools=bool(GUEST_TOOLS_RE.match(name)),
                )
        except IntegrityError:
            continue  # an upload of that name began meanwhile
        changed = True
    others = [r.host_id for r in target_pools(domain) if r.host_id != host.pk]
    if domain.shared or not others:
        busy = images_jobs(known.values())
        gone = [
            image.pk
            for name, image in known.items()
            if name not in present and image.status == IsoImageStatus.OK and image.pk not in busy
        ]
        if gone:
            changed |= bool(IsoImage.objects.filter(pk__in=gone).delete()[0])
    if changed:
        broadcast("storage")
