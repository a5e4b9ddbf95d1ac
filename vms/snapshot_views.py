"""The Snapshots sub-tab and its windows: Create, (Custom) Preview, Commit, Undo, Clone, Delete.
Every view resolves the VM through the restricted queryset for the `snapshots` action."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts.permissions import can
from portal.kernel.converters import parse_id
from portal.kernel.dialogs import confirm_window, form_window, modal_done, outcome

from . import snapshots as services
from .actions import SNAPSHOT_ACTIONS, SnapshotAction, snapshot_actions_allowed
from .choices import RUNNING_STATUSES, SnapshotStatus
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
        "nics": vm.nics.select_related("profile__network"),
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
    return form_window(
        request,
        form,
        lambda data: services.snapshot_create(
            vm_id=vm.pk,
            user=request.user,
            description=data["description"],
            disk_ids=data["disks"],
            save_memory=data["save_memory"],
        ),
        success=lambda _snapshot: f"Creating a snapshot of {vm.name}.",
        template="vms/_snapshot_create.html",
        context={"vm": vm, "disks": disks, "vm_running": vm.status in RUNNING_STATUSES},
    )


class CustomPreviewForm(forms.Form):
    """The Custom Preview Snapshot window: VM Configuration, Memory, and per disk the
    snapshot whose version to use (empty: the Active VM's)."""

    vm_configuration = forms.BooleanField(label="VM Configuration", required=False, initial=True)
    memory = forms.BooleanField(label="Memory", required=False)

    def __init__(self, *args, snapshot, disks, **kwargs):
        super().__init__(*args, **kwargs)
        sizing = f"({snapshot.memory_mb} MB, {snapshot.vcpus} vCPU)"
        self.fields["vm_configuration"].help_text = sizing
        if snapshot.memory_saved:
            self.fields["memory"].initial = True
        else:  # shown greyed out; what is posted is still the service's to refuse
            self.fields["memory"].widget.attrs["disabled"] = True
            self.fields["memory"].help_text = "(not saved in this snapshot)"
        self.disks = disks
        for disk in disks:
            self.fields[f"disk_{disk.pk}"] = forms.CharField(required=False)

    def options(self) -> dict:
        data = self.cleaned_data
        return {
            "vm_configuration": data.get("vm_configuration", False),
            "memory": data.get("memory", False),
            "disks": {disk.pk: parse_id(data[f"disk_{disk.pk}"]) for disk in self.disks},
        }


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_preview(request, pk: int, sid: int):
    """Preview, or the Custom Preview Snapshot window (VM Configuration, Memory, and per disk
    the snapshot whose version to use)."""
    vm = _vm(request, pk)
    snapshot = get_object_or_404(Snapshot, pk=sid, vm=vm)
    snapshots = list(vm.snapshots.filter(status="ok").prefetch_related("disks"))
    disks = list(vm.disks.order_by("target"))

    def preview(**options):
        return services.snapshot_preview(
            vm_id=vm.pk, snapshot_id=snapshot.pk, user=request.user, **options
        )

    def success(_job) -> str:
        return f"Previewing snapshot '{snapshot}' of {vm.name}."

    if request.method == "POST" and not request.POST.get("custom"):
        # The toolbar's Preview button: the whole snapshot, without a window.
        # A VM defined outside Vireo keeps its maker's configuration: its disks only.
        whole = {"vm_configuration": True, "memory": snapshot.memory_saved, "disks": None}
        if vm.is_external:
            whole |= {"vm_configuration": False, "memory": False}
        return modal_done(request, [outcome(lambda: preview(**whole), success)])
    rows = [
        (disk, [s for s in snapshots if any(sd.disk_id == disk.pk for sd in s.disks.all())])
        for disk in disks
    ]
    form = CustomPreviewForm(request.POST or None, snapshot=snapshot, disks=disks)
    if vm.is_external:  # its disks only (the service refuses the rest): not offered
        del form.fields["vm_configuration"], form.fields["memory"]
    return form_window(
        request,
        form,
        lambda _data: preview(**form.options()),
        success=success,
        template="vms/_snapshot_preview.html",
        context={"vm": vm, "snapshot": snapshot, "rows": rows},
    )


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_end_preview(request, pk: int, action: str):
    """Commit or Undo the active preview (confirmation window)."""
    if action not in (SnapshotAction.COMMIT, SnapshotAction.UNDO):
        raise Http404
    vm = _vm(request, pk)
    service = (
        services.snapshot_commit if action == SnapshotAction.COMMIT else services.snapshot_undo
    )
    return confirm_window(
        request,
        lambda: service(vm_id=vm.pk, user=request.user),
        success=lambda _job: f"{SNAPSHOT_ACTIONS[action].label}: {vm.name} requested.",
        template="vms/_snapshot_end_preview.html",
        context={"vm": vm, "action": action, "preview": getattr(vm, "preview", None)},
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
    return form_window(
        request,
        form,
        lambda data: services.snapshot_clone(
            vm_id=vm.pk,
            snapshot_id=snapshot.pk,
            user=request.user,
            name=data["name"],
            description=data["description"],
        ),
        success=lambda clone: f"Cloning {clone.name} from snapshot '{snapshot}'.",
        template="vms/_snapshot_clone.html",
        context={"vm": vm, "snapshot": snapshot},
    )


@login_required
@require_http_methods(["GET", "POST"])
def snapshot_delete(request, pk: int, sid: int):
    """Delete a snapshot (confirmation window); its data is merged."""
    vm = _vm(request, pk)
    snapshot = get_object_or_404(Snapshot, pk=sid, vm=vm)
    return confirm_window(
        request,
        lambda: services.snapshot_delete(vm_id=vm.pk, snapshot_id=snapshot.pk, user=request.user),
        success=lambda _job: f"Deleting snapshot '{snapshot}' of {vm.name}.",
        template="vms/_snapshot_delete.html",
        context={"vm": vm, "snapshot": snapshot},
    )
