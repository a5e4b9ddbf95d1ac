"""The Storage tab's storage domains: the list with its toolbar (New Domain, and Edit, Remove,
Maintenance, Activate, Attach, Detach on the selected domain) and their windows.

The toolbar reads the action catalogue (vms.actions), which storage/ may not import, so these
views live in vms beside the disks' windows (vms/disk_views.py); portal/urls.py puts their URLs
in the storage namespace. Reads go through storage/selectors.py."""

from django import forms
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from accounts.permissions import can
from portal.kernel.converters import parse_id
from portal.kernel.dialogs import confirm_window, form_window
from portal.kernel.errors import ActionRefused
from portal.kernel.paging import page_get
from storage import selectors
from storage.choices import DomainFunction, StorageType
from storage.models import StorageDomain
from storage.validators import (
    export_path_check,
    local_path_check,
    nfs_server_check,
)

from . import domains as services
from .actions import DOMAIN_CONFIRM_ACTIONS, DOMAIN_TOOLBAR, domain_actions_allowed
from .forms import name_chars
from .iso_views import images_context
from .models import DataCenter


def _refusal(domain: StorageDomain, key: str) -> str:
    """Why the window cannot act on the domain now (the service refuses the same), or ""."""
    return services.domain_refusal(domain, key)


def _editable(request, pk: int) -> StorageDomain:
    domains = StorageDomain.objects.select_related("data_center")
    return get_object_or_404(domains.restrict(request.user, "edit_storage"), pk=pk)


def _creatable_data_centers(user):
    return DataCenter.objects.restrict(user, "create_storage_domain").order_by("name", "pk")


@admin_portal_required
def domain_list(request):
    """Storage domains with type, status and total / used / free; a selected domain (clicked
    row) gets the toolbar's actions and a pane with its pool on each host."""
    user = request.user
    visible = selectors.domain_list(user)
    page = page_get(visible, request.GET.get("page"))
    selected, actions, pools = None, frozenset(), []
    wanted = parse_id(request.GET.get("selected"))
    if wanted is not None:
        selected = visible.filter(pk=wanted).first()
    if selected is not None:
        pools = selectors.domain_pools(selected)
        if can(user, "edit_storage", selected):
            actions = domain_actions_allowed(selected.status)
    context = {
        "page": page,
        "tab": "storage",
        "subtab": "domains",
        "selected": selected,
        "actions": actions,
        "toolbar": DOMAIN_TOOLBAR,
        "pools": pools,
        "can_create": _creatable_data_centers(user).exists(),
        **images_context(request, selected),
    }
    template = "storage/_domain_table.html" if request.htmx else "storage/domain_list.html"
    return render(request, template, context)


class NewDomainForm(forms.Form):
    name = forms.CharField(max_length=255, validators=[name_chars])
    description = forms.CharField(max_length=1000, required=False)
    data_center = forms.ModelChoiceField(
        label="Data Center", queryset=DataCenter.objects.none(), empty_label=None
    )
    domain_function = forms.ChoiceField(label="Domain Function", choices=DomainFunction.choices)
    storage_type = forms.ChoiceField(label="Storage Type", choices=StorageType.choices)
    path = forms.CharField(
        label="Path",
        max_length=1024,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "/var/lib/vireo/data1"}),
    )
    nfs_server = forms.CharField(
        label="NFS Server",
        max_length=255,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "nfs.example.com"}),
    )
    export_path = forms.CharField(
        label="Export Path",
        max_length=1024,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "/exports/data"}),
    )

    def __init__(self, *args, data_centers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["data_center"].queryset = data_centers

    def clean(self):
        data = super().clean()
        if data.get("storage_type") == StorageType.NFS:
            checks = (("nfs_server", nfs_server_check), ("export_path", export_path_check))
        else:
            checks = (("path", local_path_check),)
        for field, check in checks:
            try:
                data[field] = check(data.get(field, ""))
            except ActionRefused as exc:
                self.add_error(field, str(exc))
        return data


@admin_portal_required
@require_http_methods(["GET", "POST"])
def domain_new(request):
    """The New Domain window: Local on Host (a directory on each host) or NFS (server and
    export path); the fields follow the Storage Type chosen."""
    data_centers = _creatable_data_centers(request.user)
    if not data_centers.exists():
        raise Http404
    form = NewDomainForm(request.POST or None, data_centers=data_centers)

    def create(data):
        nfs = data["storage_type"] == StorageType.NFS
        return services.storage_domain_create(
            user=request.user,
            name=data["name"],
            description=data["description"],
            data_center_id=data["data_center"].pk,
            domain_function=data["domain_function"],
            storage_type=data["storage_type"],
            path=data["export_path"] if nfs else data["path"],
            nfs_server=data["nfs_server"] if nfs else "",
        )

    return form_window(
        request,
        form,
        create,
        success=lambda domain: f"Adding storage domain {domain.name}.",
        template="storage/_domain_new_dialog.html",
        redirect_to="storage:domains",
    )


class EditDomainForm(forms.Form):
    name = forms.CharField(max_length=255, validators=[name_chars])
    description = forms.CharField(max_length=1000, required=False)


@admin_portal_required
@require_http_methods(["GET", "POST"])
def domain_edit(request, pk: int):
    """The Edit Domain window: name and description."""
    domain = _editable(request, pk)
    initial = {"name": domain.name, "description": domain.description}
    form = EditDomainForm(request.POST or None, initial=initial)
    refused = _refusal(domain, "edit") if request.method == "GET" else ""
    return form_window(
        request,
        form,
        lambda data: services.storage_domain_edit(
            domain_id=domain.pk,
            user=request.user,
            name=data["name"],
            description=data["description"],
        ),
        success=lambda saved: f"Storage domain {saved.name} saved.",
        template="storage/_domain_edit_dialog.html",
        context={"domain": domain, "error": refused or None, "refused": refused},
        redirect_to="storage:domains",
    )


class RemoveDomainForm(forms.Form):
    format_domain = forms.BooleanField(
        label="Format Domain, i.e. Storage Content will be lost!", required=False
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def domain_remove(request, pk: int):
    """The Remove Storage(s) window: keep the data, or Format Domain (delete its volumes)."""
    domain = _editable(request, pk)
    form = RemoveDomainForm(request.POST or None)
    refused = _refusal(domain, "remove") if request.method == "GET" else ""
    return form_window(
        request,
        form,
        lambda data: services.storage_domain_remove(
            domain_id=domain.pk, user=request.user, format_domain=data["format_domain"]
        ),
        success=lambda _job: f"Removing storage domain {domain.name}.",
        template="storage/_domain_remove_dialog.html",
        context={"domain": domain, "error": refused or None, "refused": refused},
        redirect_to="storage:domains",
    )


class AttachDomainForm(forms.Form):
    data_center = forms.ModelChoiceField(
        label="Data Center", queryset=DataCenter.objects.none(), empty_label=None
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def domain_attach(request, pk: int):
    """The Attach to Data Center window of an Unattached domain."""
    domain = _editable(request, pk)
    form = AttachDomainForm(request.POST or None, initial={"data_center": domain.data_center_id})
    form.fields["data_center"].queryset = _creatable_data_centers(request.user)
    refused = _refusal(domain, "attach") if request.method == "GET" else ""
    return form_window(
        request,
        form,
        lambda data: services.storage_domain_attach(
            domain_id=domain.pk, user=request.user, data_center_id=data["data_center"].pk
        ),
        success=lambda _job: f"Attaching storage domain {domain.name}.",
        template="storage/_domain_attach_dialog.html",
        context={"domain": domain, "error": refused or None, "refused": refused},
        redirect_to="storage:domains",
    )


_PROGRESSIVE = {
    "maintenance": "Moving storage domain {} to maintenance.",
    "activate": "Activating storage domain {}.",
    "detach": "Detaching storage domain {}.",
}


@admin_portal_required
@require_http_methods(["GET", "POST"])
def domain_action(request, pk: int, action: str):
    """The confirmation windows of Maintenance, Activate and Detach."""
    entry = DOMAIN_CONFIRM_ACTIONS.get(action)
    if entry is None:
        raise Http404
    domain = _editable(request, pk)
    service = getattr(services, entry.service.rpartition(".")[2])
    refused = _refusal(domain, action)
    return confirm_window(
        request,
        lambda: service(domain_id=domain.pk, user=request.user),
        success=lambda _job: _PROGRESSIVE[action].format(domain.name),
        template="storage/_domain_action_dialog.html",
        context={"domain": domain, "entry": entry, "error": refused or None, "refused": refused},
        redirect_to="storage:domains",
    )


# Included by portal/urls.py into the "storage" namespace, next to storage/urls.py's Disks list.
domain_urlpatterns = [
    path("", domain_list, name="domains"),
    path("domains/new/", domain_new, name="domain_new"),
    path("domains/<id:pk>/edit/", domain_edit, name="domain_edit"),
    path("domains/<id:pk>/remove/", domain_remove, name="domain_remove"),
    path("domains/<id:pk>/attach/", domain_attach, name="domain_attach"),
    path("domains/<id:pk>/<str:action>/", domain_action, name="domain_action"),
]
