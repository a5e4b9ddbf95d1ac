"""The Images sub-tab of an ISO domain (Storage tab, the selected domain): its list with Upload,
Remove and Mark as Guest Tools / Unmark, and the endpoints the Upload window's script talks to
(start or resume, each chunk, the upload's state). The toolbar reads the action catalogue, so
these views live in vms beside the domains' (vms/domain_views.py). See docs/iso-domains.md."""

from django import forms
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from accounts.permissions import can
from portal.kernel.converters import parse_id
from portal.kernel.dialogs import confirm_window
from portal.kernel.errors import ActionRefused
from storage.choices import DomainFunction, StorageDomainStatus
from storage.isos import images_of
from storage.models import IsoImage, StorageDomain

from . import isos as services
from .actions import IMAGE_ACTIONS

UPLOAD = IMAGE_ACTIONS["upload"]


def images_context(request, selected: StorageDomain | None) -> dict:
    """What the selected ISO domain's Images sub-tab shows (for domain_views.domain_list): its
    images with each one's active job, the selected image and the actions allowed."""
    if selected is None or selected.domain_function != DomainFunction.ISO:
        return {}
    if request.GET.get("pane") != "images":
        return {"iso_domain": True}
    images = list(images_of(selected))
    jobs = services.images_jobs(images)
    for image in images:
        image.job = jobs.get(image.pk)
    wanted = parse_id(request.GET.get("image"))
    chosen = next((i for i in images if i.pk == wanted), None)
    manage = can(request.user, UPLOAD.permission, selected)
    actions = set()
    if manage:
        if selected.status == StorageDomainStatus.ACTIVE:
            actions.add("upload")
        if chosen is not None and chosen.job is None:
            actions.update({"remove", "guest_tools"})
    return {
        "iso_domain": True,
        "pane": "images",
        "images": images,
        "image": chosen,
        "image_actions": actions,
    }


def _domain(request, pk: int) -> StorageDomain:
    domains = StorageDomain.objects.filter(domain_function=DomainFunction.ISO)
    return get_object_or_404(domains.restrict(request.user, UPLOAD.permission), pk=pk)


def _image(request, pk: int) -> IsoImage:
    images = IsoImage.objects.select_related("domain")
    return get_object_or_404(images.restrict(request.user, UPLOAD.permission), pk=pk)


def _refused(exc: ActionRefused) -> JsonResponse:
    return JsonResponse({"error": str(exc)}, status=400)


def _state(image: IsoImage, job=None) -> dict:
    image.refresh_from_db()
    job = job or services.image_job(image)
    return {
        "image": image.pk,
        "name": image.name,
        "size": image.size_bytes,
        "offset": image.uploaded_bytes,
        "status": image.status,
        "upload_id": str(image.upload_id) if image.upload_id else None,
        "chunk_url": reverse("storage:image_chunk", args=[image.pk]),
        "state_url": reverse("storage:image_state", args=[image.pk]),
        "job": None
        if job is None
        else {
            "id": job.pk,
            "status": job.status,
            "progress": job.progress,
            "step": job.step,
            "error": job.error,
        },
    }


class UploadWindowForm(forms.Form):
    """What the Upload Image window shows; its script sends the file (never this form)."""

    file = forms.FileField(
        label="ISO file",
        widget=forms.ClearableFileInput(attrs={"accept": ".iso,application/x-iso9660-image"}),
    )
    guest_tools = forms.BooleanField(
        label="Guest tools ISO",
        required=False,
        help_text="Offered first in Change CD and Run Once (e.g. virtio-win).",
    )


class UploadForm(forms.Form):
    name = forms.CharField(max_length=1000)
    size = forms.IntegerField(min_value=0)
    guest_tools = forms.BooleanField(required=False)


@admin_portal_required
@require_http_methods(["GET", "POST"])
def image_upload(request, pk: int):
    """The Upload Image window (GET), and the start (or resume) of an upload (POST, from its
    script: the file's name and size; JSON with the image, its upload id and the offset to
    send from)."""
    domain = _domain(request, pk)
    if request.method == "GET":
        context = {
            "domain": domain,
            "entry": UPLOAD,
            "form": UploadWindowForm(),
            "chunk_bytes": services.chunk_bytes(),
            "free": min((r.free_bytes for r in services.target_pools(domain)), default=0),
        }
        return render(request, "storage/_image_upload_dialog.html", context)
    form = UploadForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"error": "Choose an ISO file to upload."}, status=400)
    try:
        image = services.iso_upload_start(
            user=request.user,
            domain_id=domain.pk,
            name=form.cleaned_data["name"],
            size_bytes=form.cleaned_data["size"],
            guest_tools=form.cleaned_data["guest_tools"],
        )
    except ActionRefused as exc:
        return _refused(exc)
    return JsonResponse(_state(image))


@admin_portal_required
@require_http_methods(["POST"])
def image_chunk(request, pk: int):
    """One chunk of an upload: the request's body, appended at `offset` (the bytes staged so
    far) to the staging file, read a piece at a time."""
    image = _image(request, pk)
    try:
        offset = int(request.GET.get("offset", ""))
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return JsonResponse({"error": "The chunk's offset is not a number."}, status=400)
    if length > services.chunk_bytes():
        return JsonResponse({"error": "That chunk is too large."}, status=400)
    try:
        image, job = services.iso_upload_chunk(
            user=request.user,
            image_id=image.pk,
            upload_id=request.GET.get("upload", ""),
            offset=offset,
            body=request,
            length=length,
        )
    except ActionRefused as exc:
        return _refused(exc)
    return JsonResponse(_state(image, job))


@admin_portal_required
@require_http_methods(["GET"])
def image_state(request, pk: int):
    """An upload's state for its progress bar: bytes staged, then its job's progress; once
    the image is gone (a failed job takes it away), the job's error."""
    image = _image(request, pk)
    return JsonResponse(_state(image))


@admin_portal_required
@require_http_methods(["GET", "POST"])
def image_remove(request, pk: int):
    """The Remove ISO Image(s) window."""
    image = _image(request, pk)
    entry = IMAGE_ACTIONS["remove"]
    return confirm_window(
        request,
        lambda: services.iso_image_remove(user=request.user, image_id=image.pk),
        success=lambda _job: f"Removing {image.name}.",
        template="storage/_image_action_dialog.html",
        context={"image": image, "entry": entry, "question": entry.question},
        redirect_to="storage:domains",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def image_guest_tools(request, pk: int):
    """Mark as Guest Tools / Unmark: the window asks, OK flips the mark."""
    image = _image(request, pk)
    entry = IMAGE_ACTIONS["guest_tools"]
    mark = not image.guest_tools
    question = (
        f"Offer {image.name} as the guest tools ISO (listed first in Change CD and Run Once)?"
        if mark
        else f"Stop offering {image.name} as the guest tools ISO?"
    )
    return confirm_window(
        request,
        lambda: services.iso_image_guest_tools(
            user=request.user, image_id=image.pk, guest_tools=mark
        ),
        success=lambda saved: (
            f"{saved.name} is {'' if mark else 'no longer '}marked as guest tools."
        ),
        template="storage/_image_action_dialog.html",
        context={
            "image": image,
            "entry": entry,
            "title": "Mark as Guest Tools" if mark else "Unmark Guest Tools",
            "question": question,
        },
        redirect_to="storage:domains",
    )


# Included by portal/urls.py into the "storage" namespace.
image_urlpatterns = [
    path("domains/<id:pk>/images/upload/", image_upload, name="image_upload"),
    path("images/<id:pk>/chunk/", image_chunk, name="image_chunk"),
    path("images/<id:pk>/state/", image_state, name="image_state"),
    path("images/<id:pk>/remove/", image_remove, name="image_remove"),
    path("images/<id:pk>/guest-tools/", image_guest_tools, name="image_guest_tools"),
]
