"""The Snapshots sub-tab and its windows: Create, (Custom) Preview, Commit, Undo, Clone, Delete.
Every view resolves the VM through the restricted queryset for the `snapshots` action."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts.permissions import can
from portal.kernel.converters import parse_id
from portal.kernel.dialogs import modal_done
from portal.kernel.errors import ActionRefused

from . import snapshots as services
from .choices import RUNNING_STATUSES, SnapshotAction, SnapshotStatus, snapshot_actions_allowed
from .models import Snapshot
from .selectors import vms_visible

# A selected snapshot's sub-tabs, in order: the template renders them from this list.
SNAPSHOT_SUBTABS = {
    "general": "General",
    "disks": "Disks",
    "nics": "Network Interfaces",
    "apps": "Installed Applications",
}


def _vm(request, pk: int):
    return get_object_or_404(vms_visible(request.user, "snapshots"), pk=pk)


def snapshots_context(request, vm, *, url: str | None = None, target: str = "#vm-details") -> dict:
    """The Snapshots sub-tab: "Active VM" and the snapshots, the selected one's details, and
    the actions the snapshot table and the user's permissions allow."""
    snapshots = list(vm.snapshots.prefetch_related("disks__disk"))
    state = services.snapshot_state(vm)
    selected = None
    wanted = parse_id(request.GET.get("snapshot"))
    if wanted is not None:
        selected = next((s for s in snapshots if s.pk == wanted), None)
    permitted = can(request.user, "snapshots", vm)
    actions = frozenset()
    if permitted:
        actions = snapshot_actions_allowed(
            vm_status=vm.status, snapshot_status=selected.status if selected else None, **state
        )
        if state["previewing"]:  # Commit and Undo act on the preview, whichever row is selected
            actions |= {SnapshotAction.COMMIT, SnapshotAction.UNDO} & snapshot_actions_allowed(
                vm_status=vm.status, snapshot_status=SnapshotStatus.IN_PREVIEW, **state
            )
    sub = request.GET.get("sub", "general")
    return {
        "snapshots_url": url or reverse("vms:details", args=[vm.pk, "snapshots"]),
        "snapshots_target": target,
        "snapshots": snapshots,
        "selected_snapshot": selected,
        "snapshot_actions": actions,
        "previewing": state["previewing"],
        "snapshot_sub": sub if sub in SNAPSHOT_SUBTABS else "general",
        "snapshot_subtabs": SNAPSHOT_SUBTABS.items(),
        "can_snapshot": permitted,
        "vm_running": vm.status in RUNNING_STATUSES,
        "nics": vm.nics.select_related("network"),
    }


class CreateSnapshotForm(forms.Form):
    description = forms.CharField(max_length=1000, required=False)
    disks = forms.MultipleChoiceField(label="Disks to include", required=False)
    save_memory = forms.BooleanField(label="Save Memory", required=False)


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_create(request, pk: int):
    """The Create snapshot window."""
    vm = _vm(request, pk)
    disks = list(vm.disks.order_by("target"))
    form = CreateSnapshotForm(request.POST or None, initial={"disks": [str(d.pk) for d in disks]})
    form.fields["disks"].choices = [(str(d.pk), f"{d.alias} ({d.target})") for d in disks]
    error = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.snapshot_create(
                vm_id=vm.pk,
                user=request.user,
                description=data["description"],
                disk_ids=data["disks"],
                save_memory=data["save_memory"],
            )
        except ActionRefused as exc:
            error = str(exc)
        else:
            return modal_done(request, [("success", f"Creating a snapshot of {vm.name}.")])
    context = {
        "vm": vm,
        "form": form,
        "disks": disks,
        "error": error,
        "vm_running": vm.status in RUNNING_STATUSES,
    }
    return render(request, "vms/_snapshot_create.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_preview(request, pk: int, sid: int):
    """Preview, or the Custom Preview Snapshot window (VM Configuration, Memory, and per disk
    the snapshot whose version to use)."""
    vm = _vm(request, pk)
    snapshot = get_object_or_404(Snapshot, pk=sid, vm=vm)
    snapshots = list(vm.snapshots.filter(status="ok").prefetch_related("disks"))
    disks = list(vm.disks.order_by("target"))
    error = None
    if request.method == "POST":
        if request.POST.get("custom"):
            choice = {}
            for disk in disks:
                value = request.POST.get(f"disk_{disk.pk}", "")
                choice[disk.pk] = parse_id(value)
            options = {
                "vm_configuration": bool(request.POST.get("vm_configuration")),
                "memory": bool(request.POST.get("memory")),
                "disks": choice,
            }
        else:
            options = {"vm_configuration": True, "memory": snapshot.memory_saved, "disks": None}
        try:
            services.snapshot_preview(
                vm_id=vm.pk, snapshot_id=snapshot.pk, user=request.user, **options
            )
        except ActionRefused as exc:
            error = str(exc)
            if not request.POST.get("custom"):
                return modal_done(request, [("error", error)])
        else:
            return modal_done(
                request, [("success", f"Previewing snapshot '{snapshot}' of {vm.name}.")]
            )
    rows = [
        (disk, [s for s in snapshots if any(sd.disk_id == disk.pk for sd in s.disks.all())])
        for disk in disks
    ]
    return render(
        request,
        "vms/_snapshot_preview.html",
        {"vm": vm, "snapshot": snapshot, "rows": rows, "error": error},
    )


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_end_preview(request, pk: int, action: str):
    """Commit or Undo the active preview (confirmation window)."""
    if action not in (SnapshotAction.COMMIT, SnapshotAction.UNDO):
        raise Http404
    vm = _vm(request, pk)
    if request.method == "POST":
        service = (
            services.snapshot_commit if action == SnapshotAction.COMMIT else services.snapshot_undo
        )
        try:
            service(vm_id=vm.pk, user=request.user)
        except ActionRefused as exc:
            return modal_done(request, [("error", str(exc))])
        return modal_done(
            request, [("success", f"{SnapshotAction(action).label}: {vm.name} requested.")]
        )
    preview = getattr(vm, "preview", None)
    return render(
        request, "vms/_snapshot_end_preview.html", {"vm": vm, "action": action, "preview": preview}
    )


class CloneFromSnapshotForm(forms.Form):
    name = forms.CharField(max_length=1000, required=False)
    description = forms.CharField(max_length=1000, required=False)


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_clone(request, pk: int, sid: int):
    """Clone a Virtual Machine from a Snapshot: Name and Description."""
    vm = _vm(request, pk)
    snapshot = get_object_or_404(Snapshot, pk=sid, vm=vm)
    form = CloneFromSnapshotForm(
        request.POST or None, initial={"name": f"{vm.name}-from-snapshot"[:255]}
    )
    error = None
    if request.method == "POST" and form.is_valid():
        try:
            clone = services.snapshot_clone(
                vm_id=vm.pk,
                snapshot_id=snapshot.pk,
                user=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )
        except ActionRefused as exc:
            error = str(exc)
        else:
            return modal_done(
                request, [("success", f"Cloning {clone.name} from snapshot '{snapshot}'.")]
            )
    return render(
        request,
        "vms/_snapshot_clone.html",
        {"vm": vm, "snapshot": snapshot, "form": form, "error": error},
    )


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_delete(request, pk: int, sid: int):
    """Delete a snapshot (confirmation window); its data is merged."""
    vm = _vm(request, pk)
    snapshot = get_object_or_404(Snapshot, pk=sid, vm=vm)
    if request.method == "POST":
        try:
            services.snapshot_delete(vm_id=vm.pk, snapshot_id=snapshot.pk, user=request.user)
        except ActionRefused as exc:
            return modal_done(request, [("error", str(exc))])
        return modal_done(request, [("success", f"Deleting snapshot '{snapshot}' of {vm.name}.")])
    return render(request, "vms/_snapshot_delete.html", {"vm": vm, "snapshot": snapshot})
