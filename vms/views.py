"""Virtual Machines, Hosts and Clusters tabs. Views are thin: resolve the object through the
permission-restricted queryset (404 when it is out of reach), call one service, render."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.module_loading import import_string
from django.views.decorators.http import require_http_methods

from accounts.access import admin_portal_required
from accounts.models import System
from accounts.permissions import can, may_read_permissions
from portal.kernel.converters import parse_id
from portal.kernel.dialogs import form_window, modal_done, outcome
from portal.kernel.models import Event
from portal.kernel.paging import page_get
from portal.kernel.search import SEARCH_MAX, SearchError
from storage.images import images_offered

from . import selectors, services
from .actions import (
    CLUSTER_ACTIONS,
    DATACENTER_ACTIONS,
    HOST_ACTIONS,
    TOOLBAR,
    VM_STATUS_ACTIONS,
    VMAction,
)
from .affinity_views import affinity_context, cluster_affinity_context
from .cdrom_views import change_cd_window, run_once_window
from .forms import (
    MIGRATION_POLICY_FIELDS,
    CloneForm,
    EditClusterForm,
    EditVMForm,
    HostForm,
    ImportForm,
    MigrateForm,
    NewVMForm,
    VMActionForm,
)
from .host_devices import attached_host, host_devices_context
from .migration import migration_targets, vm_migrate
from .migration_policy import VM_FIELDS as VM_MIGRATION_FIELDS
from .migration_policy import effective_migration_settings, migration_rows
from .models import Cluster, DataCenter, HaRestart
from .scheduling_policy import SCHEDULING_FIELDS, scheduling_rows
from .search import HINT as SEARCH_HINT
from .selectors import SORTS, can_create_vm, vm_create_choices, vm_page, vm_rows, vms_visible
from .snapshot_views import snapshots_context

# The details pane's sub-tabs, in order: the template renders them from this list.
DETAIL_TABS = {
    "general": "General",
    "disks": "Disks",
    "nics": "Network Interfaces",
    "snapshots": "Snapshots",
    "affinity": "Affinity Groups",
    "hostdevs": "Host Devices",
    "events": "Events",
    "permissions": "Permissions",
}


def _list_context(request, selected=None, *, toolbar: bool = True):
    q = request.GET.get("q", "").strip()
    sort = request.GET.get("sort", "name")
    search_error = None
    try:
        page, rows, sort = vm_page(request.user, q=q, sort=sort, page=request.GET.get("page", 1))
    except SearchError as exc:  # shown above the list, which then holds nothing
        search_error = str(exc)
        page, rows = Paginator([], 1).get_page(1), []
        sort = sort if isinstance(sort, str) and sort.lstrip("-") in SORTS else "name"
    # What the list's links carry (the sort headers and the pager add theirs), in this order.
    list_query = QueryDict(mutable=True)
    list_query.update({"q": q[:SEARCH_MAX], "sort": sort})
    return {
        "list_query": list_query,
        "page": page,
        "rows": rows,
        "q": q[:SEARCH_MAX],
        "search_error": search_error,
        "search_hint": SEARCH_HINT,
        "sort": sort,
        "tab": "vms",
        "selected": selected,
        # Only the full page has the toolbar's New VM button.
        "can_create": toolbar and can_create_vm(request.user),
        "toolbar": TOOLBAR,
    }


@admin_portal_required
def vm_list(request):
    """The Virtual Machines tab: results list, toolbar, and the details pane of the selection."""
    selected = None
    selected_id = parse_id(request.GET.get("selected"))
    if selected_id is not None:
        selected = vms_visible(request.user).filter(pk=selected_id).first()
    template = "vms/_vm_table.html" if request.htmx else "vms/vm_list.html"
    context = _list_context(request, selected, toolbar=not request.htmx)
    if selected is not None:
        context.update(_details_context(request, selected, "general"))
    return render(request, template, context)


@admin_portal_required
def vm_table(request):
    """The results list alone (search, sort, paging and live refresh swap it). A search, sort
    or page the user chose goes into the address bar, so a reload keeps it."""
    context = _list_context(request, toolbar=False)
    response = render(request, "vms/_vm_table.html", context)
    if request.htmx and request.htmx.trigger != "vm-results":  # not the live refresh
        response["HX-Replace-Url"] = _list_url(context)
    return response


def _list_url(context) -> str:
    params = {"q": context["q"], "sort": context["sort"], "page": context["page"].number}
    defaults = {"q": "", "sort": "name", "page": 1}
    query = urlencode({k: v for k, v in params.items() if v != defaults[k]})
    return reverse("vms:list") + (f"?{query}" if query else "")


@admin_portal_required
def vm_detail(request, pk: int):
    """A VM's own URL: the list with this VM selected and its details pane open."""
    vm = get_object_or_404(vms_visible(request.user), pk=pk)
    if request.htmx:
        return vm_details_pane(request, pk, "general")
    context = _list_context(request, vm)
    context.update(_details_context(request, vm, "general"))
    return render(request, "vms/vm_list.html", context)


def _vm_live(request, pk: int):
    """The VM a row or pane shows. A live refresh (the page's `X-Vireo-Live` header) of a VM that
    is gone or out of reach gets 204 with `X-Vireo-Gone`, not 404: a refresh that set off just
    before a removal committed is answered quietly and the page takes the row or pane off. A
    deleted VM and one out of reach get the same answer, so neither tells of the other."""
    vm = vms_visible(request.user).filter(pk=pk).first()
    if vm is not None:
        return vm, None
    if request.headers.get("X-Vireo-Live"):
        return None, HttpResponse(status=204, headers={"X-Vireo-Gone": "1"})
    raise Http404


@admin_portal_required
def vm_row(request, pk: int):
    """One row of the results list, re-fetched when the VM changes."""
    vm, gone = _vm_live(request, pk)
    if gone:
        return gone
    return render(request, "vms/_vm_row.html", {"row": vm_rows(request.user, [vm])[0]})


def _details_context(request, vm, tab: str) -> dict:
    row = vm_rows(request.user, [vm])[0]
    context = {"vm": vm, "row": row, "detail_tab": tab, "can_edit": row.can_edit}
    context["detail_tabs"] = DETAIL_TABS.items()
    if tab == "general":
        context["migration_rows"] = migration_rows(effective_migration_settings(vm))
        context["ha_restart"] = HaRestart.objects.filter(vm=vm).first()
    elif tab == "disks":
        context["disks"] = vm.disks.select_related("storage_domain").order_by("target")
    elif tab == "nics":
        context["nic_page"] = page_get(selectors.vm_nics(vm), request.GET.get("page"))
        context["nics_locked"] = any(n.locked for n in context["nic_page"].object_list)
    elif tab == "events":
        context["events"] = Event.objects.filter(vm=vm).select_related("user")[:100]
    elif tab == "snapshots":
        context.update(snapshots_context(request, vm))
    elif tab == "affinity":
        context.update(affinity_context(request, vm))
    elif tab == "hostdevs":
        context.update(host_devices_context(vm))
    elif tab == "permissions":
        context["can_read_permissions"] = may_read_permissions(request.user, vm)
    return context


@admin_portal_required
def vm_details_pane(request, pk: int, tab: str):
    """The details pane with its sub-tabs General, Disks and Events."""
    if tab not in DETAIL_TABS:
        raise Http404
    vm, gone = _vm_live(request, pk)
    if gone:
        return gone
    return render(request, "vms/_vm_details.html", _details_context(request, vm, tab))


def _selected_vms(request, action: str):
    given = request.POST.getlist("vm") or request.GET.getlist("vm")
    ids = {parse_id(i) for i in given}
    if not ids or None in ids:
        raise Http404
    vms = list(vms_visible(request.user, action).filter(pk__in=ids).select_related("cluster"))
    if len(vms) != len(ids):
        raise Http404
    return vms


@login_required
@require_http_methods(["GET", "POST"])
def vm_action(request, action: str):
    """The toolbar's and right-click menu's actions: the confirmation window (GET) and OK (POST),
    as the action's catalogue entry describes them."""
    entry = VM_STATUS_ACTIONS.get(action)
    if entry is None:
        raise Http404
    vms = _selected_vms(request, entry.permission)
    if action == VMAction.CLONE:  # its own window: the clone's name
        return _vm_clone(request, vms)
    if action == VMAction.IMPORT:  # its own window: the name it is imported under
        return _vm_import(request, vms)
    if action == VMAction.MIGRATE:  # its own window: where to
        return _vm_migrate(request, vms, entry)
    if action == VMAction.RUN_ONCE:  # its own window: Boot Options for this start
        return run_once_window(request, vms)
    if action == VMAction.CHANGE_CD:  # its own window: the image, or [Eject]
        return change_cd_window(request, vms)
    if len(vms) > 1 and not entry.multi:
        return HttpResponseBadRequest("This action takes one virtual machine.")
    reason_field = "reason" in entry.inputs and any(
        vm.cluster.shutdown_reason_enabled for vm in vms
    )
    if request.method == "GET":
        context = {"vms": vms, "entry": entry, "reason_field": reason_field, "form": VMActionForm()}
        return render(request, "vms/_action_dialog.html", context)
    form = VMActionForm(request.POST)
    if not form.is_valid():  # a reason no VM may keep (too long, NUL): nothing is done
        return modal_done(request, [("error", f"Reason: {e}") for e in form.errors["reason"]])
    service = import_string(entry.service)
    given = {name: form.cleaned_data[name] for name in entry.inputs}
    results = [
        outcome(
            lambda vm=vm: service(vm_id=vm.pk, user=request.user, **given),
            lambda _job, vm=vm: f"{entry.label}: {vm.name} requested.",
        )
        for vm in vms
    ]
    return modal_done(request, results)


def _vm_import(request, vms):
    if len(vms) != 1:
        return HttpResponseBadRequest("Import takes one virtual machine.")
    vm = vms[0]
    form = ImportForm(request.POST or None, initial={"name": vm.domain_name or vm.name})
    return form_window(
        request,
        form,
        lambda data: services.vm_import(vm_id=vm.pk, user=request.user, name=data["name"]),
        success=lambda _job: f"Importing {vm.name} as {form.cleaned_data['name'].strip()}.",
        template="vms/_import_dialog.html",
        context={"vm": vm},
    )


def _vm_migrate(request, vms, entry):
    """Migrate Virtual Machine(s): the hosts offered are those that can take every selected
    VM (one cluster); OK asks the service once per VM."""
    offered = None
    for vm in vms:
        targets = {h.pk: h for h in migration_targets(vm)}
        offered = targets if offered is None else {k: h for k, h in offered.items() if k in targets}
    hosts = sorted(offered.values(), key=lambda h: h.name)
    form = MigrateForm(request.POST or None, hosts=hosts)
    context = {"vms": vms, "entry": entry, "form": form, "hosts": hosts}
    if request.method == "GET" or not form.is_valid():
        return render(request, "vms/_migrate_dialog.html", context)
    host_id = form.host_id()
    results = [
        outcome(
            lambda vm=vm: vm_migrate(vm_id=vm.pk, user=request.user, host_id=host_id),
            lambda _job, vm=vm: f"Migrating {vm.name}.",
        )
        for vm in vms
    ]
    return modal_done(request, results)


def _vm_clone(request, vms):
    if len(vms) != 1:
        return HttpResponseBadRequest("Clone VM takes one virtual machine.")
    vm = vms[0]
    form = CloneForm(request.POST or None, initial={"clone_name": f"{vm.name}-clone"[:255]})
    return form_window(
        request,
        form,
        lambda data: services.vm_clone(
            vm_id=vm.pk, user=request.user, clone_name=data["clone_name"]
        ),
        success=lambda clone: f"Cloning {vm.name} to {clone.name}.",
        template="vms/_clone_dialog.html",
        context={"vm": vm},
    )


@login_required
@require_http_methods(["GET", "POST"])
def vm_new(request):
    """The New Virtual Machine window: blank, or from a template, with one disk."""
    choices = vm_create_choices(request.user)
    if not choices["clusters"].exists():
        raise Http404
    images = (
        images_offered(request.user, data_center_id=None)
        .filter(domain__data_center__clusters__in=choices["clusters"])
        .distinct()
    )
    form = NewVMForm(request.POST or None, choices=choices, images=images)
    return form_window(
        request,
        form,
        lambda data: services.vm_create(
            user=request.user,
            name=data["name"],
            description=data["description"],
            cluster_id=data["cluster"].pk,
            memory_mb=data["memory_mb"],
            vcpus=data["vcpus"],
            disk_bytes=data["disk_size_gb"] * 1024**3,
            storage_domain_id=data["storage_domain"].pk,
            sparse=data["allocation"] == "thin",
            template_id=data["template"].pk if data["template"] else None,
            profile_id=data["profile"].pk if data["profile"] else None,
            boot_sequence=data["boot_sequence"],
            cd_image_id=data["cd_image"],
        ),
        success=lambda vm: f"Creating VM {vm.name}.",
        template="vms/_new_vm_dialog.html",
    )


HOST_ROW_ACTIONS = tuple(a for k, a in HOST_ACTIONS.items() if k != "add_host")
CLUSTER_ROW_ACTIONS = tuple(a for k, a in CLUSTER_ACTIONS.items() if k != "create")
DATACENTER_ROW_ACTIONS = tuple(a for k, a in DATACENTER_ACTIONS.items() if k != "create")


@admin_portal_required
def host_list(request):
    """The Hosts tab: what libvirt reports of each host, and its Edit, Remove, Maintenance and
    Activate buttons (enabled as the host's status allows)."""
    page = page_get(selectors.host_list(request.user), request.GET.get("page"))
    selectors.row_actions_attach(
        request.user, page.object_list, HOST_ROW_ACTIONS, status_allows=True
    )
    template = "vms/_host_table.html" if request.htmx else "vms/host_list.html"
    context = {
        "page": page,
        "tab": "hosts",
        "can_add": can(request.user, "add_host"),
        "row_entries": HOST_ROW_ACTIONS,
    }
    return render(request, template, context)


@admin_portal_required
@require_http_methods(["GET", "POST"])
def host_new(request):
    """The New Host window: a host is added by its libvirt URI."""
    if not can(request.user, "add_host"):
        raise Http404
    form = HostForm(
        request.POST or None, clusters=Cluster.objects.restrict(request.user, "add_host")
    )
    return form_window(
        request,
        form,
        lambda data: services.host_add(
            user=request.user, name=data["name"], uri=data["uri"], cluster_id=data["cluster"].pk
        ),
        success=lambda host: f"Host {host.name} added; connecting.",
        template="vms/_host_dialog.html",
        redirect_to="vms:hosts",
    )


@admin_portal_required
def cluster_list(request):
    """The Clusters tab."""
    page = page_get(selectors.cluster_list(request.user), request.GET.get("page"))
    selectors.row_actions_attach(request.user, page.object_list, CLUSTER_ROW_ACTIONS)
    template = "vms/_cluster_table.html" if request.htmx else "vms/cluster_list.html"
    context = {
        "page": page,
        "tab": "clusters",
        "row_entries": CLUSTER_ROW_ACTIONS,
        "can_create": DataCenter.objects.restrict(
            request.user, CLUSTER_ACTIONS["create"].permission
        ).exists(),
        "create": CLUSTER_ACTIONS["create"],
    }
    return render(request, template, context)


# The cluster's details pane's sub-tabs, in order.
CLUSTER_DETAIL_TABS = {"general": "General", "affinity": "Affinity Groups"}


@admin_portal_required
def cluster_details(request, pk: int, tab: str):
    """A cluster's details pane: the General sub-tab (its settings, Migration Policy and
    Scheduling Policy with its properties) and its Affinity Groups."""
    if tab not in CLUSTER_DETAIL_TABS:
        raise Http404
    cluster = get_object_or_404(
        Cluster.objects.select_related("data_center").restrict(request.user, "view"), pk=pk
    )
    context = {
        "cluster": cluster,
        "detail_tab": tab,
        "detail_tabs": CLUSTER_DETAIL_TABS.items(),
        "scheduling_rows": scheduling_rows(cluster),
    }
    if tab == "affinity":
        context.update(cluster_affinity_context(request, cluster))
    return render(request, "vms/_cluster_details.html", context)


@admin_portal_required
@require_http_methods(["GET", "POST"])
def cluster_edit(request, pk: int):
    """The Edit Cluster window (the VM settings this slice uses)."""
    entry = CLUSTER_ACTIONS["edit"]
    cluster = get_object_or_404(Cluster.objects.restrict(request.user, entry.permission), pk=pk)
    form = EditClusterForm(request.POST or None, initial=EditClusterForm.initial_of(cluster))
    return form_window(
        request,
        form,
        lambda data: services.cluster_update(
            cluster_id=cluster.pk,
            user=request.user,
            name=data["name"],
            shutdown_reason_enabled=data["shutdown_reason_enabled"],
            shutdown_timeout=data["shutdown_timeout"],
            description=data["description"],
            migration=_posted(request, data, MIGRATION_POLICY_FIELDS),
            max_concurrent_migrations=data["max_concurrent_migrations"],
            scheduling=_posted(request, data, SCHEDULING_FIELDS),
        ),
        success=lambda saved: f"Cluster {saved.name} saved.",
        template="vms/_cluster_dialog.html",
        context={"cluster": cluster, "entry": entry, "post_url": request.path},
        redirect_to="vms:clusters",
    )


def _posted(request, data: dict, names) -> dict:
    """The cleaned values of the fields among `names` the window posted (a client that knows
    no such tab leaves them unchanged)."""
    return {name: data[name] for name in names if name in request.POST}


@admin_portal_required
def datacenter_list(request):
    """The Data Centers tab, with each data center's storage domains, logical networks and
    templates, and a Permissions window for each."""
    user = request.user
    page = page_get(selectors.datacenter_list(user), request.GET.get("page"))
    selectors.row_actions_attach(user, page.object_list, DATACENTER_ROW_ACTIONS)
    context = {
        "tab": "datacenters",
        "page": page,
        "datacenters": page.object_list,
        "row_entries": DATACENTER_ROW_ACTIONS,
        "can_create": can(user, DATACENTER_ACTIONS["create"].permission, System.get()),
        "create": DATACENTER_ACTIONS["create"],
    }
    context.update(selectors.datacenter_contents(user, page.object_list))
    # Which Permissions windows to offer (kind -> ids): those the user may read.
    context["readable"] = {
        kind: {obj.pk for obj in context[key] if may_read_permissions(user, obj)}
        for kind, key in (
            ("datacenter", "datacenters"),
            ("cluster", "clusters"),
            ("network", "networks"),
            ("template", "templates"),
            ("storagedomain", "storage_domains"),
        )
    }
    return render(request, "vms/datacenter_list.html", context)


def _vm_migration_posted(request, form: EditVMForm, data: dict):
    """Edit VM's migration fields, when its Host tab was posted (Migration mode is always
    posted by the window); Pass-Through Host CPU only where it could change (while Down)."""
    if "migration_mode" not in request.POST:
        return services.NO_CHANGE
    posted = _posted(request, data, VM_MIGRATION_FIELDS)
    if not form.fields["cpu_passthrough"].disabled:
        posted["cpu_passthrough"] = data["cpu_passthrough"]
    return posted


@login_required
@require_http_methods(["GET", "POST"])
def vm_edit(request, pk: int):
    """The Edit Virtual Machine window: General (description, Single Sign-On), System (memory
    and CPUs, while Down), Host (Start Running On), High Availability (Priority for
    Run/Migration queue) and Console (Console Disconnect Action)."""
    vm = get_object_or_404(vms_visible(request.user, "edit_vm"), pk=pk)
    images = images_offered(request.user, data_center_id=vm.cluster.data_center_id)
    initial = {
        "description": vm.description,
        "memory_mb": vm.memory_mb,
        "vcpus": vm.vcpus,
        "cores_per_socket": vm.cores_per_socket,
        "sso_enabled": vm.sso_enabled,
        "start_host": vm.start_host_id,
        "console_disconnect_action": vm.console_disconnect_action,
        **{name: getattr(vm, name) for name in VM_MIGRATION_FIELDS},
        "priority": vm.priority,
        "highly_available": vm.highly_available,
    }
    form = EditVMForm(request.POST or None, initial=initial, vm=vm, images=images)
    return form_window(
        request,
        form,
        lambda data: services.vm_edit(
            vm_id=vm.pk,
            user=request.user,
            description=data["description"],
            sso_enabled=data["sso_enabled"],
            memory_mb=data["memory_mb"],
            vcpus=data["vcpus"],
            cores_per_socket=data["cores_per_socket"],
            start_host_id=data["start_host"].pk if data["start_host"] else None,
            boot_sequence=data.get("boot_sequence", services.NO_CHANGE),
            cd_image_id=data.get("cd_image", services.NO_CHANGE),
            console_disconnect_action=data["console_disconnect_action"] or services.NO_CHANGE,
            migration=_vm_migration_posted(request, form, data),
            priority=services.NO_CHANGE if data["priority"] is None else data["priority"],
            # The High Availability tab posts its Priority; its unticked check box posts nothing.
            highly_available=data["highly_available"]
            if "priority" in request.POST
            else services.NO_CHANGE,
        ),
        success=lambda saved: f"VM {vm.name} saved.{getattr(saved, 'ha_pinned_warning', '')}",
        template="vms/_edit_vm_dialog.html",
        context={"vm": vm, "devices_host": attached_host(vm)},
    )
