"""Reads and checks of the ISO images a VM may have in its CD-ROM drive (Attach CD, Run Once,
Change CD): which images are offered to a user for a data center, whether a chosen one may be
used, and whether a host reaches it."""

from django.db.models import QuerySet

from portal.kernel.errors import ActionRefused

from .choices import DomainFunction, IsoImageStatus, PoolStatus, StorageDomainStatus
from .models import IsoImage, StorageDomainHost

GUEST_TOOLS_MARK = " (guest tools)"


def images_offered(user, *, data_center_id: int | None) -> QuerySet:
    """The images a user may put in a VM's CD-ROM drive in a data center (None: in any): OK
    images of its Active ISO domains that the user may see, the guest tools ISO first, then by
    name."""
    images = IsoImage.objects.restrict(user, "view").filter(
        status=IsoImageStatus.OK,
        domain__domain_function=DomainFunction.ISO,
        domain__status=StorageDomainStatus.ACTIVE,
    )
    if data_center_id is not None:
        images = images.filter(domain__data_center_id=data_center_id)
    return images.select_related("domain", "domain__data_center").order_by(
        "-guest_tools", "name", "pk"
    )


def image_label(image: IsoImage) -> str:
    """An image in a drop-down: its name, marked when it is the guest tools ISO."""
    return image.name + (GUEST_TOOLS_MARK if image.guest_tools else "")


def image_choose(user, image_id, *, data_center_id: int) -> IsoImage:
    """The image `image_id` if the user may put it in a VM of the data center; else a refusal
    that says why (an image the user may not see is answered as one that does not exist)."""
    try:
        image_id = int(image_id)
    except (TypeError, ValueError):
        raise ActionRefused("Choose an image from the list.") from None
    image = (
        IsoImage.objects.restrict(user, "view")
        .select_related("domain", "domain__data_center")
        .filter(pk=image_id)
        .first()
    )
    if image is None:
        raise ActionRefused("That image does not exist (any more), or you may not use it.")
    domain = image.domain
    if domain.data_center_id != data_center_id or domain.domain_function != DomainFunction.ISO:
        raise ActionRefused(
            f"Image {image.name} is in data center {domain.data_center.name}; choose an image "
            "of an ISO domain of the VM's data center."
        )
    if image.status != IsoImageStatus.OK:
        raise ActionRefused(
            f"Image {image.name} is {image.get_status_display()}: it is still being uploaded. "
            "Choose it once it is OK."
        )
    if domain.status != StorageDomainStatus.ACTIVE:
        raise ActionRefused(
            f"ISO domain {domain.name} is {domain.get_status_display()}; its images can be "
            "attached only while it is Active."
        )
    return image


def image_unusable_on(image: IsoImage, host) -> str:
    """Why `host` cannot read `image` (its ISO domain's pool is not Active there), or ""."""
    row = StorageDomainHost.objects.filter(domain_id=image.domain_id, host=host).first()
    if row is not None and row.status == PoolStatus.ACTIVE:
        return ""
    why = f": {row.error}" if row is not None and row.error else "."
    return (
        f"ISO domain {image.domain.name} is not active on host {host.name}, so image "
        f"{image.name} cannot be attached there{why}"
    )
