"""Selectors: the reads behind the VM pages, restricted to what the user may see."""

from dataclasses import dataclass

from django.core.paginator import Page
from django.db.models import Count, Exists, F, JSONField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import JSONObject

from accounts.permissions import permitted_actions
from portal.kernel.models import Job
from portal.kernel.paging import page_get
from storage.models import StorageDomain

from .actions import (
    VM_ACTIONS,
    VM_STATUS_ACTIONS,
    VM_WINDOW_ACTIONS,
    allowed_actions,
    job_shows_on,
    preview_blocked,
)
from .choices import BUSY_STATUSES, NetworkStatus
from .models import (
    Cluster,
    DataCenter,
    Host,
    Network,
    NetworkInterface,
    SnapshotPreview,
    Template,
    VirtualMachine,
    VnicProfile,
)
from .search import vm_search

SORTS = {
    "name": "name",
    "status": "status",
    "host": "host__name",
    "cluster": "cluster__name",
    "memory": "memory_mb",
    "cpus": "vcpus",
    # A longer uptime is an earlier start: Uptime ascending is started_at descending.
    "uptime": "-started_at",
}


def vms_visible(user, action: str = "view") -> QuerySet:
    return VirtualMachine.objects.select_related(
        "host", "cluster", "migrating_to", "guest"
    ).restrict(user, action)


NULLABLE_SORTS = frozenset({"host", "uptime"})


JOB_FIELDS = ("id", "kind", "description", "step", "progress", "status", "vm_id", "result_vm_id")


@dataclass
class LiveState:
    """A VM's status, its newest active job and whether a snapshot preview is active, as one
    statement read them (so the status and the job's progress belong together)."""

    status: str
    status_changed_at: object
    started_at: object
    job: Job | None
    previewing: bool


def live_states(vm_ids) -> dict[int, LiveState]:
    """Each VM's status with its newest active job (acting on it or making it) and its preview,
    in one query: a job that ends or a status that moves between two reads cannot pair a
    stale bar with a new badge. The job is kept only while the VM is in that job's busy status."""
    newest_job = (
        Job.objects.filter(
            Q(vm_id=OuterRef("pk")) | Q(result_vm_id=OuterRef("pk")), status__in=Job.ACTIVE
        )
        .order_by("-created_at", "-pk")
        .values(j=JSONObject(**{f: f for f in JOB_FIELDS}))[:1]
    )
    rows = (
        VirtualMachine.objects.filter(pk__in=vm_ids)
        .annotate(
            live_job=Subquery(newest_job, output_field=JSONField()),
            previewing=Exists(SnapshotPreview.objects.filter(vm=OuterRef("pk"))),
        )
        .values_list("pk", "status", "status_changed_at", "started_at", "live_job", "previewing")
    )
    states = {}
    for pk, status, changed, started, job, previewing in rows:
        if job is not None and job_shows_on(job["kind"], status):
            job = Job(**job)
        else:
            job = None
        states[pk] = LiveState(status, changed, started, job, previewing)
    return states


@dataclass
class VMRow:
    """A VM as one row of the results list: the VM, its running job, the enabled actions."""

    vm: VirtualMachine
    job: Job | None
    actions: frozenset[str]
    can_manage_permissions: bool = False
    can_edit: bool = False
    can_snapshots: bool = False
    permitted: frozenset[str] = frozenset()  # the role actions the user holds on the VM

    @property
    def is_busy(self) -> bool:
        """A job is working on the VM: its row may change before the page has subscribed."""
        return self.job is not None or self.vm.status in BUSY_STATUSES


def vm_rows(user, vms: list[VirtualMachine]) -> list[VMRow]:
    """Rows for a page of VMs: the actions the catalogue allows from each VM's status, cut down
    to those whose role actions the user holds on it (and to what an active snapshot preview
    allows). Each VM's status is re-read with its job
    in one statement (`live_states`), so the badge and the progress bar agree."""
    states = live_states({vm.pk for vm in vms})
    needed = {
        p
        for a in (*VM_STATUS_ACTIONS.values(), *VM_WINDOW_ACTIONS.values())
        for p in (a.permission, *a.also)
    }
    permitted = permitted_actions(
        user, vms, [*sorted(needed), "manage_permissions", "edit_vm", "snapshots"]
    )
    rows = []
    for vm in vms:
        state = states.get(vm.pk)
        if state is not None:
            vm.status = state.status
            vm.status_changed_at, vm.started_at = state.status_changed_at, state.started_at
        held = permitted[vm.pk]
        actions = frozenset(
            key
            for key in allowed_actions(vm.status, external=vm.is_external)
            if {VM_ACTIONS[key].permission, *VM_ACTIONS[key].also} <= held
        )
        if state is not None and state.previewing:
            actions -= preview_blocked()
        rows.append(
            VMRow(
                vm=vm,
                job=state.job if state else None,
                actions=actions,
                can_manage_permissions="manage_permissions" in held,
                can_edit="edit_vm" in held,
                can_snapshots="snapshots" in held,
                permitted=frozenset(held),
            )
        )
    return rows


def vm_page(
    user, *, q: str = "", sort: str = "name", page: int | str = 1
) -> tuple[Page, list[VMRow], str]:
    """One page of the results list, searched (oVirt's search syntax, `vms.search`) and sorted
    by a column. A bad search raises SearchError before any query."""
    qs = vms_visible(user)
    if q:
        qs = qs.filter(vm_search(q))
    key = sort.lstrip("-")
    if key not in SORTS:
        sort, key = "name", "name"
    field = SORTS[key]
    descending = sort.startswith("-")
    # Empty values (no host, no uptime) come first ascending and last descending. Only the
    # columns that can be empty say so: a NULLS clause on the others would stop PostgreSQL
    # from walking their index (the first page of 10,000 VMs would sort them all).
    nullable = key in NULLABLE_SORTS
    nulls = ({"nulls_last": True} if descending else {"nulls_first": True}) if nullable else {}
    column = F(field.lstrip("-"))
    order = column.desc(**nulls) if descending != field.startswith("-") else column.asc(**nulls)
    qs = qs.order_by(order, "pk")
    page_obj = page_get(qs, page)
    return page_obj, vm_rows(user, list(page_obj.object_list)), sort


def vm_create_choices(user) -> dict:
    """What the New VM window may offer: clusters for blank VMs and for VMs from templates,
    the templates, and the storage domains the user may create disks on."""
    blank_clusters = Cluster.objects.restrict(user, "create_vm")
    template_clusters = Cluster.objects.restrict(user, "create_vm_from_template")
    return {
        "blank_clusters": blank_clusters,
        "template_clusters": template_clusters,
        "clusters": Cluster.objects.filter(
            Q(pk__in=blank_clusters.values("pk")) | Q(pk__in=template_clusters.values("pk"))
        ),
        "templates": Template.objects.restrict(user, "create_vm_from_template"),
        "disk_domains": StorageDomain.objects.restrict(user, "create_disk"),
        "profiles": usable_profiles(VnicProfile.objects.restrict(user, "attach_vnic")),
    }


def can_create_vm(user) -> bool:
    """Whether the user may create a VM in some cluster (blank or from a template)."""
    return Cluster.objects.restrict(user, ("create_vm", "create_vm_from_template")).exists()


def row_actions_attach(user, objects, entries, *, status_allows: bool = False) -> list:
    """Set on each object of a page `held_actions`, the keys of the catalogue `entries` (the
    Edit, Remove, ... of a Hosts, Clusters or Data Centers row) whose role action the user holds
    on it, and `enabled_actions`, those of them its status lets start (`status_allows`: the
    entries' statuses, a host's; otherwise all held ones). Answered from the grants in memory."""
    objects = list(objects)
    permitted = permitted_actions(user, objects, sorted({e.permission for e in entries}))
    for obj in objects:
        held = permitted.get(obj.pk, frozenset())
        obj.held_actions = frozenset(e.key for e in entries if e.permission in held)
        obj.enabled_actions = frozenset(
            e.key
            for e in entries
            if e.key in obj.held_actions and (not status_allows or e.allows(obj.status))
        )
    return objects


def host_list(user) -> QuerySet:
    """The Hosts tab: hosts the user may see, by name."""
    return Host.objects.select_related("cluster").restrict(user, "view").order_by("name", "pk")


def cluster_list(user) -> QuerySet:
    """The Clusters tab: clusters the user may see, by name."""
    clusters = Cluster.objects.select_related("data_center").restrict(user, "view")
    return clusters.order_by("name", "pk")


def datacenter_list(user) -> QuerySet:
    """The Data Centers tab: data centers the user may see, by name."""
    return DataCenter.objects.restrict(user, "view").order_by("name", "pk")


def datacenter_contents(user, datacenters) -> dict[str, QuerySet]:
    """What a page of data centers holds that the user may see: clusters, storage domains
    (with view_storage), logical networks and templates."""
    inside = {"data_center_id__in": [dc.pk for dc in datacenters]}
    return {
        "clusters": Cluster.objects.filter(**inside).restrict(user, "view"),
        "storage_domains": StorageDomain.objects.filter(**inside).restrict(user, "view_storage"),
        "networks": Network.objects.filter(**inside).restrict(user, "view"),
        "templates": Template.objects.filter(**inside).restrict(user, "view"),
    }


def usable_profiles(queryset) -> QuerySet:
    """Profiles an interface may be put on: of VM networks no job is changing."""
    return queryset.filter(
        network__vm_network=True, network__status=NetworkStatus.OPERATIONAL
    ).select_related("network__data_center")


def network_list(user, data_center=None) -> QuerySet:
    """The logical networks the user may see (of one data center, or of all), with their
    profile counts."""
    networks = Network.objects.select_related("data_center").restrict(user, "view")
    if data_center is not None:
        networks = networks.filter(data_center=data_center)
    return networks.annotate(profile_count=Count("profiles")).order_by(
        "data_center__name", "name", "pk"
    )


def profile_list(user, network) -> QuerySet:
    """A logical network's vNIC profiles the user may see."""
    return VnicProfile.objects.filter(network=network).restrict(user, "view").order_by("name", "pk")


def vm_nics(vm) -> QuerySet:
    """A VM's network interfaces, with their profiles and networks."""
    return (
        NetworkInterface.objects.filter(vm=vm)
        .select_related("profile__network")
        .order_by("name", "pk")
    )
