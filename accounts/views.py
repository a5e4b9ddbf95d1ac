"""The Permissions sub-tabs, the Configure window (roles and system permissions), and the
User Portal."""

from django import forms
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.validators import RegexValidator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from portal.kernel.config import KEYS, ConfigKey, config_get, config_rows, config_set
from portal.kernel.converters import parse_id
from portal.kernel.dialogs import confirm_window, form_window, modal_done, outcome
from portal.kernel.search import SEARCH_MAX, SearchError, search_text
from vms.actions import USER_PORTAL_ACTIONS
from vms.models import VirtualMachine
from vms.selectors import can_create_vm, vm_rows
from vms.snapshot_views import snapshots_context

from . import services
from .catalogue import ACTIONS
from .models import Role, System
from .permissions import can, is_admin, may_read_permissions, object_permissions

PERMISSION_KINDS = {
    "system": "accounts.System",
    "datacenter": "vms.DataCenter",
    "cluster": "vms.Cluster",
    "host": "vms.Host",
    "vm": "vms.VirtualMachine",
    "storagedomain": "storage.StorageDomain",
    "network": "vms.Network",
    "vnicprofile": "vms.VnicProfile",
    "template": "vms.Template",
}


# Objects seen with more than "view": storage (as on the Data Centers and Storage tabs), so
# its Permissions window is no way round "every object of a data center except its storage".
SEEN_WITH = {"storagedomain": "view_storage"}


def _target(request, kind: str, pk: int, action: str | tuple[str, ...] = "view"):
    label = PERMISSION_KINDS.get(kind)
    if label is None:
        raise Http404
    model = apps.get_model(label)
    if model is System:
        System.get()
    objects = model.objects.restrict(request.user, action)
    if kind in SEEN_WITH:
        objects = objects.restrict(request.user, SEEN_WITH[kind])
    return get_object_or_404(objects, pk=pk)


@login_required
def permission_list(request, kind: str, pk: int):
    """The Permissions sub-tab: user or group, role, and where it is inherited from. Who holds
    which role is for those who may manage permissions there or administer the object."""
    obj = _target(request, kind, pk, ("view", "manage_permissions"))
    if not may_read_permissions(request.user, obj):
        raise Http404
    context = {
        "obj": obj,
        "kind": kind,
        "rows": object_permissions(obj),
        "can_manage": can(request.user, "manage_permissions", obj),
    }
    template = (
        "accounts/_permissions_window.html"
        if request.GET.get("window")
        else "accounts/_permissions.html"
    )
    return render(request, template, context)


class PermissionAddFields(forms.Form):
    """The Add Permission window's Search box and Role to Assign list, so that they render as
    the portal's field groups. The view reads what is posted itself: the ticked users and
    groups are rows of the search's table, and the role must be one the user may assign."""

    q = forms.CharField(
        label="Search",
        max_length=SEARCH_MAX,
        required=False,
        widget=forms.TextInput(
            attrs={"placeholder": "Name or user name, or part of one", "data-enter-clicks": "go"}
        ),
    )
    role = forms.ChoiceField(label="Role to Assign")

    def __init__(self, *args, roles, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = [(r.pk, r.name) for r in roles]


@login_required
@require_http_methods(["GET", "POST"])
def permission_add(request, kind: str, pk: int):
    """The Add Permission window: Search, Go, tick users or groups, Role to Assign, OK."""
    obj = _target(request, kind, pk, "manage_permissions")
    roles = services.assignable_roles(request.user, obj)
    q = request.GET.get("q", request.POST.get("q", ""))
    users, groups, search_error = [], [], None
    if "q" in request.GET or request.method == "POST":
        try:
            users, groups = services.principals_search(search_text(q))
        except SearchError as exc:
            search_error = str(exc)
    error = None
    if request.method == "POST":
        chosen = request.POST.getlist("principal")
        role = next((r for r in roles if str(r.pk) == request.POST.get("role")), None)
        if not chosen:
            error = "Tick at least one user or group."
        elif role is None:
            error = "Choose a role you may assign."
        else:
            results = []
            User = get_user_model()
            for token in chosen:
                kind_, _, ident = token.partition(":")
                model = Group if kind_ == "group" else User
                principals = model.objects.all()
                if model is User:  # as the Search offers them: active accounts, not guardian's
                    from guardian.conf import settings as guardian_settings

                    principals = principals.filter(is_active=True).exclude(
                        username=guardian_settings.ANONYMOUS_USER_NAME
                    )
                pk = parse_id(ident)
                principal = principals.filter(pk=pk).first() if pk is not None else None
                if principal is None:
                    results.append(("error", "That user or group does not exist any more."))
                    continue
                results.append(
                    outcome(
                        lambda principal=principal: services.permission_add(
                            user=request.user, principal=principal, role=role, obj=obj
                        ),
                        lambda _grant, principal=principal: (
                            f"{principal} now holds {role.name} on {obj}."
                        ),
                    )
                )
            return modal_done(request, results, redirect_to="home")
    user_role = next((r.pk for r in roles if r.name == "UserRole"), None)
    context = {
        "obj": obj,
        "kind": kind,
        "form": PermissionAddFields(initial={"q": q[:SEARCH_MAX], "role": user_role}, roles=roles),
        "users": users,
        "groups": groups,
        "searched": "q" in request.GET,
        "search_error": search_error,
        "error": error,
    }
    return render(request, "accounts/_permission_add.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def permission_remove(request, kind: str, pk: int, row_kind: str, row_id: int):
    """Remove a permission: "Are you sure ...?" with OK / Cancel."""
    obj = _target(request, kind, pk, "manage_permissions")
    row = next(
        (
            r
            for r in object_permissions(obj)
            if r.id == row_id and r.kind == row_kind and not r.inherited
        ),
        None,
    )
    if row is None:
        raise Http404
    return confirm_window(
        request,
        lambda: services.permission_remove(
            user=request.user, kind=row_kind, row_id=row_id, obj=obj
        ),
        success=lambda _removed: f"Removed {row.role.name} from {row.principal}.",
        template="accounts/_permission_remove.html",
        context={"obj": obj, "kind": kind, "row": row},
        redirect_to="home",
    )


@admin_portal_required
def configure(request):
    """The Configure window: Roles, System Permissions, and Engine Configuration (shown to
    administrators who may configure the whole system: manage_roles on System)."""
    tab = request.GET.get("tab", "roles")
    can_manage_roles = can(request.user, "manage_roles", System.get())
    context = {
        "tab": "configure",
        "subtab": tab,
        "system": System.get(),
        "roles": Role.objects.prefetch_related("actions"),
        "can_manage_roles": can_manage_roles,
        "can_see_system": may_read_permissions(request.user, System.get()),
        "engine_config": config_rows() if tab == "engine" and can_manage_roles else None,
    }
    return render(request, "accounts/configure.html", context)


def _config_field(key: ConfigKey) -> forms.Field:
    """The form field of one engine-config key, as its type says (the service checks again)."""
    label = key.name
    if key.kind == "bool":
        return forms.BooleanField(label=label, required=False, help_text=key.description)
    if key.kind == "int":
        unit = f" ({key.unit})" if key.unit else ""
        return forms.IntegerField(
            label=label + unit,
            min_value=key.minimum,
            max_value=key.maximum,
            help_text=f"{key.description} {key.minimum} to {key.maximum}.",
        )
    return forms.ChoiceField(label=label, choices=key.choices, help_text=key.description)


class EngineConfigForm(forms.Form):
    """The Edit Engine Configuration window: one field, typed as the key."""

    def __init__(self, *args, key: ConfigKey, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["value"] = _config_field(key)


@admin_portal_required
@require_http_methods(["GET", "POST"])
def engine_config_edit(request, key: str):
    """Edit one engine-config key (manage_roles on System, as the rest of the system's
    configuration); the same check and Event as `manage.py engine_config -s`."""
    if not can(request.user, "manage_roles", System.get()) or key not in KEYS:
        raise Http404
    config_key = KEYS[key]
    # An unticked check box posts nothing: a POST is bound even when empty.
    data = request.POST if request.method == "POST" else None
    form = EngineConfigForm(data, key=config_key, initial={"value": config_get(key)})
    return form_window(
        request,
        form,
        lambda data: config_set(key, data["value"], user=request.user),
        success=lambda value: f"{key} set to {config_key.show(value)}.",
        template="accounts/_engine_config_dialog.html",
        context={"key": config_key, "default": config_key.show(config_key.default)},
        redirect_to="configure",
    )


class RoleForm(forms.Form):
    """Checks every field at once (the service checks again, and the name's uniqueness)."""

    name = forms.CharField(
        max_length=126,
        validators=[
            RegexValidator(
                services.ROLE_NAME_RE,
                "Role name is required: letters, digits, '-', '_' and '.', at most 126 characters.",
            )
        ],
    )
    description = forms.CharField(max_length=1000, required=False)
    account_type = forms.ChoiceField(
        label="Account Type",
        choices=[("user", "User"), ("admin", "Admin")],
        widget=forms.RadioSelect,
    )
    actions = forms.MultipleChoiceField(
        label="Check Boxes to Allow Action",
        choices=list(ACTIONS.items()),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Tick at least one action permission."},
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def role_edit(request, pk: int | None = None):
    """New Role / Edit Role window. Built-in roles are shown read-only."""
    role = get_object_or_404(Role, pk=pk) if pk else None
    if not can(request.user, "manage_roles", System.get()):
        raise Http404
    initial = {"account_type": "user"}
    if role is not None:
        initial = {
            "name": role.name,
            "description": role.description,
            "account_type": "admin" if role.is_admin else "user",
            "actions": sorted(role.action_set),
        }
    form = RoleForm(request.POST or None, initial=initial)
    if role is not None and role.builtin:  # shown read-only: nothing to save
        return render(request, "accounts/_role_dialog.html", {"form": form, "role": role})

    def save(data):
        fields = {
            "name": data["name"],
            "description": data["description"],
            "is_admin": data["account_type"] == "admin",
            "actions": data["actions"],
        }
        if role is None:
            return services.role_create(user=request.user, **fields)
        return services.role_update(user=request.user, role_id=role.pk, **fields)

    return form_window(
        request,
        form,
        save,
        success=lambda saved: f"Role {saved.name} saved.",
        template="accounts/_role_dialog.html",
        context={"role": role},
        redirect_to="configure",
    )


@admin_portal_required
@require_http_methods(["GET", "POST"])
def role_remove(request, pk: int):
    """Remove a custom role."""
    role = get_object_or_404(Role, pk=pk)
    if not can(request.user, "manage_roles", System.get()):
        raise Http404
    return confirm_window(
        request,
        lambda: services.role_remove(user=request.user, role_id=role.pk),
        success=lambda _removed: f"Role {role.name} removed.",
        template="accounts/_role_remove.html",
        context={"role": role},
        redirect_to="configure",
    )


def _user_vms(user):
    # The VMs the user may use (run); seeing a whole data center is the Administration Portal's job.
    return VirtualMachine.objects.select_related("host", "cluster", "guest").restrict(user, "run")


@login_required
def user_portal(request):
    """The User Portal: the VMs this user may use, with the actions the catalogue offers there
    (Run, Shutdown, Suspend, Reboot, Power Off, Remove) that the user's role allows, and Edit;
    those that ask do so in the same window as the Administration Portal."""
    rows = vm_rows(request.user, list(_user_vms(request.user).order_by("name")))
    context = {
        "rows": rows,
        "portal": "user",
        "actions": USER_PORTAL_ACTIONS,
        "is_admin": is_admin(request.user),
        "can_create": can_create_vm(request.user),
    }
    return render(request, "accounts/user_portal.html", context)


@login_required
def user_vm_card(request, pk: int):
    """One VM card of the User Portal, re-fetched when the VM changes. A live refresh of a VM
    that is gone or out of reach (removed from this portal) gets 204 with `X-Vireo-Gone`, as
    the Administration Portal's rows do: the page takes the card off."""
    vm = _user_vms(request.user).filter(pk=pk).first()
    if vm is None:
        if request.headers.get("X-Vireo-Live"):
            return HttpResponse(status=204, headers={"X-Vireo-Gone": "1"})
        raise Http404
    row = vm_rows(request.user, [vm])[0]
    return render(request, "accounts/_vm_card.html", {"row": row, "actions": USER_PORTAL_ACTIONS})


@login_required
def user_vm_snapshots(request, pk: int):
    """The Snapshots pane of one of the user's VMs in the User Portal (needs `snapshots`)."""
    vm = get_object_or_404(VirtualMachine.objects.restrict(request.user, "snapshots"), pk=pk)
    context = {
        "vm": vm,
        **snapshots_context(
            request, vm, url=reverse("user_vm_snapshots", args=[vm.pk]), target="#user-snapshots"
        ),
    }
    return render(request, "accounts/_user_snapshots.html", context)
