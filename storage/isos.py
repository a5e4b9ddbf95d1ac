"""ISO images of an ISO domain: the checks of an image's name and content, and the staging
files uploads are appended to (VIREO_UPLOAD_DIR/<uuid>.iso, never a name from user input).

What is done on the hosts (the upload job, Remove) is vms' (vms/isos.py, vms/iso_jobs.py): it
acts on a data center's hosts. See docs/iso-domains.md."""

import re
import unicodedata
import uuid
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet

from portal.kernel.errors import ActionRefused

from .choices import DomainFunction
from .models import IsoImage, StorageDomain

# ISO 9660: the first volume descriptor is at sector 16 (byte 32768); its identifier "CD001"
# follows its type byte.
ISO_MAGIC = b"CD001"
ISO_MAGIC_OFFSET = 32769
ISO_MAGIC_END = ISO_MAGIC_OFFSET + len(ISO_MAGIC)
IMAGE_NAME_MAX = 200
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~()\[\] -]*\.[iI][sS][oO]$")
# Found in a pool outside Vireo and offered as guest tools without asking (virtio-win's ISO).
GUEST_TOOLS_RE = re.compile(r"^virtio-win.*\.iso$", re.IGNORECASE)
WRITE_PIECE = 1 << 20  # bytes read from a request body at a time


def image_name_check(name) -> str:
    """An image's name (the file's name, the pool's volume name): up to 200 characters,
    letters, digits, space, '.', '_', '-', '+', '~', '(', ')', '[', ']', starting with a
    letter or digit and ending '.iso'; no path separator, no control character."""
    name = unicodedata.normalize("NFC", str(name or "")).strip()
    if not name:
        raise ActionRefused("The image needs a file name.")
    if len(name) > IMAGE_NAME_MAX:
        raise ActionRefused(
            f"File name is too long: {len(name)} characters, at most {IMAGE_NAME_MAX}."
        )
    if "/" in name or "\\" in name or any(unicodedata.category(c)[0] == "C" for c in name):
        raise ActionRefused("File name may not contain '/', '\\' or control characters.")
    if not name.lower().endswith(".iso"):
        raise ActionRefused(f"{name} is not an ISO: its name must end with .iso.")
    if not IMAGE_NAME_RE.match(name):
        raise ActionRefused(
            "File name may contain only letters, digits, spaces and . _ - + ~ ( ) [ ], "
            "starting with a letter or digit."
        )
    return name


def iso_domain_check(domain: StorageDomain) -> None:
    if domain.domain_function != DomainFunction.ISO:
        raise ActionRefused(f"Storage domain {domain.name} is not an ISO domain.")


def upload_dir() -> Path:
    path = Path(settings.VIREO_UPLOAD_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_path(upload_id: uuid.UUID | str) -> Path:
    """The staging file of an upload: named by its uuid only."""
    return upload_dir() / f"{uuid.UUID(str(upload_id))}.iso"


def staged_size(image: IsoImage) -> int:
    """Bytes staged for an image's upload (0 when it has no staging file)."""
    if image.upload_id is None:
        return 0
    try:
        return staging_path(image.upload_id).stat().st_size
    except FileNotFoundError:
        return 0


def staging_remove(upload_id) -> None:
    if upload_id is not None:
        staging_path(upload_id).unlink(missing_ok=True)


def magic_check(path: Path, name: str) -> None:
    """Refuse a file without ISO 9660's "CD001" at byte 32769."""
    with open(path, "rb") as staged:
        staged.seek(ISO_MAGIC_OFFSET)
        if staged.read(len(ISO_MAGIC)) != ISO_MAGIC:
            raise ActionRefused(
                f"{name} is not an ISO image (no ISO 9660 volume descriptor at byte "
                f"{ISO_MAGIC_OFFSET}). Nothing was uploaded."
            )


def chunk_append(image: IsoImage, offset: int, body, length: int) -> int:
    """Append `length` bytes read from `body` (a file-like request body, read a piece at a
    time) to the image's staging file at `offset`, which must be the bytes staged so far and
    leave the whole within the declared size. Returns the bytes staged after it. A short body
    keeps what arrived (the next chunk resumes from there)."""
    path = staging_path(image.upload_id)
    staged = path.stat().st_size if path.exists() else 0
    if offset != staged:
        raise ActionRefused(
            f"The upload of {image.name} is at byte {staged}, not {offset}: resume from there."
        )
    if length <= 0 or offset + length > image.size_bytes:
        raise ActionRefused(
            f"That chunk ({length} bytes at {offset}) does not fit the declared size of "
            f"{image.name} ({image.size_bytes} bytes)."
        )
    written = 0
    with open(path, "ab") as out:
        while written < length:
            piece = body.read(min(WRITE_PIECE, length - written))
            if not piece:
                break
            out.write(piece)
            written += len(piece)
    return offset + written


def images_of(domain: StorageDomain) -> QuerySet:
    """The images of an ISO domain: guest tools first, then by name."""
    return IsoImage.objects.filter(domain=domain).select_related("uploaded_by")
