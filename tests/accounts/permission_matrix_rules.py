"""The permission matrix's rule table (test_permission_matrix.py): for every URL name, what\nkind of URL it is, what it needs, and how to fill its arguments.\n"""

from collections.abc import Callable
from dataclasses import dataclass

from django.urls import URLResolver, reverse
from permission_matrix_world import KIND_OBJECTS, KIND_SEEN_WITH, Side, Who, World, kind_objects

from accounts.catalogue import ACTIONS
from accounts.models import Role
from accounts.views import PERMISSION_KINDS
from vms.actions import DOMAIN_CONFIRM_ACTIONS, VM_STATUS_ACTIONS, SnapshotAction, VMAction
from vms.views import CLUSTER_DETAIL_TABS, DETAIL_TABS

# -- the rule table ---------------------------------------------------------------------------

ANYWHERE = "anywhere"


@dataclass(frozen=True)
class Need:
    """What a request needs: an administrative role (else 403) and one of `actions`, with all
    of `also`, on one of `on` (else 404); `on` ANYWHERE means a grant of the action on anything
    at all. `never`: the arguments do not belong together, a 404 for everybody.
    `or_admin_role`: an administrative role on the object will do instead of the actions;
    `admin_role`: an administrative role on the object is needed besides."""

    admin: bool = False
    actions: tuple[str, ...] = ()
    on: tuple | str = ()
    also: tuple[str, ...] = ()
    public: bool = False
    never: bool = False
    or_admin_role: bool = False
    admin_role: bool = False

    def met(self, who: Who) -> bool:
        if self.never:
            return False
        if not self.actions or who.superuser:
            return True
        if self.on == ANYWHERE:
            return bool(set(self.actions) & who.actions)
        return any(
            (
                any(who.holds(a, obj) for a in self.actions)
                or (self.or_admin_role and who.admin_on(obj))
            )
            and all(who.holds(a, obj) for a in self.also)
            and (not self.admin_role or who.admin_on(obj))
            for obj in self.on
        )


def need(
    *actions: str,
    on=(),
    admin: bool = False,
    also=(),
    or_admin_role: bool = False,
    admin_role: bool = False,
) -> Need:
    for action in (*actions, *also):
        assert action in ACTIONS, f"{action} is not an action of the catalogue"
    return Need(
        admin=admin,
        actions=actions,
        on=on if on == ANYWHERE else tuple(on),
        also=tuple(also),
        or_admin_role=or_admin_role,
        admin_role=admin_role,
    )


PUBLIC = Need(public=True)
NEVER = Need(never=True)
LOGGED_IN = Need()
ADMIN = Need(admin=True)


@dataclass
class Case:
    name: str
    method: str
    url: str
    need: Need
    data: dict | None = None
    # POST past the gate: unless this is met, the form refuses and nothing changes.
    refused_unless: Need | None = None
    # For a redirect that is the answer itself (home, logout): who -> expected location.
    redirect: Callable[[Who], str] | None = None
    # A POST on an object of the data center the grants are given in (not tried when refused:
    # the matrix tries refused POSTs on the other data center's objects and on global gates).
    inside: bool = False


@dataclass(frozen=True)
class Rule:
    kind: str  # what kind of URL it is, as the matrix report shows it
    cases: Callable[[World], list[Case]]
    known_bug: str = ""  # a rule the code does not follow yet (the test xfails on it alone)


ADMIN_PAGE = "Administration Portal page: administrative role, else 403"
OBJECT = "object URL: the action on the object, else 404 (403 first on Administration Portal)"
SHARED = "shared action endpoint: the action on the object, else 404"
USER = "User Portal: any logged-in user"
PUBLIC_KIND = "public"


def admin_page(name: str) -> Rule:
    return Rule(ADMIN_PAGE, lambda w: [Case(name, "GET", reverse(name), ADMIN)])


def sides(w: World) -> list[Side]:
    return [w.inside, w.outside]


def vm_pages(name: str) -> Rule:
    """Administration Portal pages of one VM (view on the VM)."""
    return Rule(
        OBJECT,
        lambda w: [
            Case(name, "GET", reverse(name, args=[s.vm.pk]), need("view", on=[s.vm], admin=True))
            for s in sides(w)
        ],
    )


def vm_details(w: World) -> list[Case]:
    return [
        Case(
            "vms:details",
            "GET",
            reverse("vms:details", args=[s.vm.pk, tab]),
            need("view", on=[s.vm], admin=True),
        )
        for s in sides(w)
        for tab in DETAIL_TABS
    ]


def vm_action(w: World) -> list[Case]:
    cases = []
    for action in VMAction.values:
        url = reverse("vms:action", args=[action])
        for s in sides(w):
            gate = need(VM_STATUS_ACTIONS[action].permission, on=[s.vm])
            cases.append(Case("vms:action", "GET", f"{url}?vm={s.vm.pk}", gate))
            data = {"vm": s.vm.pk, "clone_name": "", "remove_disks": "on", "reason": "r"}
            cases.append(Case("vms:action", "POST", url, gate, data, inside=s is w.inside))
            if action == VMAction.CLONE:
                # A clone makes a VM: besides clone on the VM, create_vm on its cluster.
                data = {"vm": s.vm.pk, "clone_name": f"copy-{s.dc.name}"}
                made = need("create_vm", on=[s.cluster])
                cases.append(Case("vms:action", "POST", url, gate, data, refused_unless=made))
    return cases


def vm_edit(w: World) -> list[Case]:
    cases = []
    for s in sides(w):
        gate = need("edit_vm", on=[s.vm])
        url = reverse("vms:edit", args=[s.vm.pk])
        data = {"description": "edited", "memory_mb": 2048, "vcpus": 2, "sso_enabled": ""}
        cases += [
            Case("vms:edit", "GET", url, gate),
            Case("vms:edit", "POST", url, gate, data, inside=s is w.inside),
        ]
    return cases


def console_pages(name: str) -> Callable[[World], list[Case]]:
    """The console window and its .vv file: console on the VM, from either portal (a refusal,
    such as a VM that is not running, is a page of its own)."""
    return lambda w: [
        Case(name, "GET", reverse(name, args=[s.vm.pk]), need("console", on=[s.vm]))
        for s in sides(w)
    ]


CREATE_VM = ("create_vm", "create_vm_from_template")


def vm_new(w: World) -> list[Case]:
    url = reverse("vms:new")
    gate = need(*CREATE_VM, on=[s.cluster for s in sides(w)])
    cases = [Case("vms:new", "GET", url, gate)]
    for s in sides(w):
        data = {
            "template": "",
            "name": f"made-{s.dc.name}",
            "description": "",
            "cluster": s.cluster.pk,
            "memory_mb": 1024,
            "vcpus": 1,
            "disk_size_gb": 1,
            "storage_domain": s.sd.pk,
            "allocation": "thin",
        }
        cases.append(
            Case(
                "vms:new",
                "POST",
                url,
                gate,
                data,
                refused_unless=need(*CREATE_VM, on=[s.cluster]),
                inside=s is w.inside,
            )
        )
    return cases


def host_new(w: World) -> list[Case]:
    url = reverse("vms:host_new")
    gate = need("add_host", on=ANYWHERE, admin=True)
    cases = [Case("vms:host_new", "GET", url, gate)]
    for s in sides(w):
        data = {"name": f"new-{s.dc.name}", "uri": f"test:///{s.dc.name}", "cluster": s.cluster.pk}
        cases.append(
            Case(
                "vms:host_new",
                "POST",
                url,
                gate,
                data,
                refused_unless=need("add_host", on=[s.cluster]),
                inside=s is w.inside,
            )
        )
    return cases


def cluster_edit(w: World) -> list[Case]:
    cases = []
    for s in sides(w):
        gate = need("edit_cluster", on=[s.cluster], admin=True)
        url = reverse("vms:cluster_edit", args=[s.cluster.pk])
        data = {
            "name": s.cluster.name,
            "description": "edited",
            "shutdown_reason_enabled": "on",
            "shutdown_timeout": 60,
        }
        cases += [
            Case("vms:cluster_edit", "GET", url, gate),
            Case("vms:cluster_edit", "POST", url, gate, data, inside=s is w.inside),
        ]
    return cases


def cluster_details(w: World) -> list[Case]:
    return [
        Case(
            "vms:cluster_details",
            "GET",
            reverse("vms:cluster_details", args=[s.cluster.pk, tab]),
            need("view", on=[s.cluster], admin=True),
        )
        for s in sides(w)
        for tab in CLUSTER_DETAIL_TABS
    ]


def datacenter_new(w: World) -> list[Case]:
    gate = need("create_datacenter", on=[w.system], admin=True)
    url = reverse("vms:datacenter_new")
    data = {"name": "made-dc", "description": ""}
    return [
        Case("vms:datacenter_new", "GET", url, gate),
        Case("vms:datacenter_new", "POST", url, gate, data),
    ]


def object_windows(name: str, action: str, attr: str, post: Callable[[Side], dict]):
    """A window on one data center, cluster or host (`attr` of each side): `action` on it."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            obj = getattr(s, attr)
            gate = need(action, on=[obj], admin=True)
            url = reverse(name, args=[obj.pk])
            out += [
                Case(name, "GET", url, gate),
                Case(name, "POST", url, gate, post(s), inside=s is w.inside),
            ]
        return out

    return cases


def host_edit(w: World) -> list[Case]:
    cases = object_windows(
        "vms:host_edit",
        "edit_host",
        "host",
        lambda s: {"name": s.host.name, "cluster": s.cluster.pk},
    )(w)
    # Another cluster is offered only where the user may add hosts.
    for s, other in ((w.inside, w.outside), (w.outside, w.inside)):
        url = reverse("vms:host_edit", args=[s.host.pk])
        data = {"name": s.host.name, "cluster": other.cluster.pk}
        gate = need("edit_host", on=[s.host], admin=True)
        made = need("add_host", on=[other.cluster])
        cases.append(Case("vms:host_edit", "POST", url, gate, data, refused_unless=made))
    return cases


def cluster_new(w: World) -> list[Case]:
    url = reverse("vms:cluster_new")
    gate = need("create_cluster", on=[s.dc for s in sides(w)], admin=True)
    cases = [Case("vms:cluster_new", "GET", url, gate)]
    for s in sides(w):
        data = {"name": f"made-{s.dc.name}", "data_center": s.dc.pk, "shutdown_timeout": 60}
        made = need("create_cluster", on=[s.dc])
        cases.append(
            Case(
                "vms:cluster_new",
                "POST",
                url,
                gate,
                data,
                refused_unless=made,
                inside=s is w.inside,
            )
        )
    return cases


def floating_disk_window(name: str, post: Callable[[Side], dict]) -> Callable[[World], list]:
    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            gate = need("edit_disk", on=[s.floating], admin=True)
            url = reverse(name, args=[s.floating.pk])
            out += [
                Case(name, "GET", url, gate),
                Case(name, "POST", url, gate, post(s), inside=s is w.inside),
            ]
        return out

    return cases


def domain_new(w: World) -> list[Case]:
    url = reverse("storage:domain_new")
    # Held on a data center (or the System): a StorageAdmin of one domain creates none.
    gate = need("create_storage_domain", on=[s.dc for s in sides(w)], admin=True)
    cases = [Case("storage:domain_new", "GET", url, gate)]
    for s in sides(w):
        data = {
            "name": f"new-{s.dc.name}",
            "description": "",
            "data_center": s.dc.pk,
            "domain_function": "data",
            "storage_type": "local",
            "path": f"/var/lib/vireo/{s.dc.name}",
        }
        cases.append(
            Case(
                "storage:domain_new",
                "POST",
                url,
                gate,
                data,
                refused_unless=need("create_storage_domain", on=[s.dc]),
                inside=s is w.inside,
            )
        )
    return cases


def domain_window(name: str, post: Callable[[Side], dict]) -> Callable[[World], list]:
    """A window on one storage domain: edit_storage on it (a DataCenterAdmin has none)."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            gate = need("edit_storage", on=[s.sd], admin=True)
            url = reverse(name, args=[s.sd.pk])
            out += [
                Case(name, "GET", url, gate),
                Case(name, "POST", url, gate, post(s), inside=s is w.inside),
            ]
        return out

    return cases


def domain_actions(w: World) -> list[Case]:
    out = []
    for key in DOMAIN_CONFIRM_ACTIONS:
        for s in sides(w):
            gate = need("edit_storage", on=[s.sd], admin=True)
            url = reverse("storage:domain_action", args=[s.sd.pk, key])
            out += [
                Case("storage:domain_action", "GET", url, gate),
                Case("storage:domain_action", "POST", url, gate, {}, inside=s is w.inside),
            ]
    return out


def image_windows(name: str, methods=("GET", "POST")) -> Callable[[World], list[Case]]:
    """The Images sub-tab's windows and the upload's endpoints: manage_images on the ISO
    domain (StorageAdmin, DataCenterAdmin, SuperUser); an image's through its domain."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            gate = need("manage_images", on=[s.iso], admin=True)
            arg = s.iso.pk if name == "storage:image_upload" else s.image.pk
            url = reverse(name, args=[arg])
            if name == "storage:image_chunk":
                url += "?offset=0&upload=00000000-0000-0000-0000-000000000000"
            data = {"name": f"new-{s.dc.name}.iso", "size": 1 << 20}
            for method in methods:
                out.append(
                    Case(
                        name,
                        method,
                        url,
                        gate,
                        data if method == "POST" else None,
                        inside=s is w.inside,
                    )
                )
        return out

    return cases


def snapshot_windows(name: str) -> Callable[[World], list[Case]]:
    """The Snapshots sub-tab's windows: the snapshots action on the VM; a snapshot of another
    VM, or an unknown Commit/Undo, is a 404 for everybody."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            gate = need("snapshots", on=[s.vm])
            if name == "vms:snapshot_create":
                args = [[s.vm.pk]]
            elif name == "vms:snapshot_end_preview":
                args = [[s.vm.pk, a] for a in (SnapshotAction.COMMIT, SnapshotAction.UNDO)]
            else:
                args = [[s.vm.pk, s.snapshot.pk]]
            for arg in args:
                url = reverse(name, args=arg)
                data = {"description": "", "name": "", "custom": ""}
                out += [
                    Case(name, "GET", url, gate),
                    Case(name, "POST", url, gate, data, inside=s is w.inside),
                ]
            if name == "vms:snapshot_clone":  # makes a VM: create_vm on the VM's cluster too
                data = {"name": f"copy-{s.dc.name}", "description": ""}
                made = need("create_vm", on=[s.cluster])
                out.append(Case(name, "POST", url, gate, data, refused_unless=made))
        mismatched = (
            [w.inside.vm.pk, "nosuchaction"]
            if name == "vms:snapshot_end_preview"
            else [w.inside.vm.pk, w.outside.snapshot.pk]
        )
        if name != "vms:snapshot_create":
            out.append(Case(name, "GET", reverse(name, args=mismatched), NEVER))
        return out

    return cases


CONFIGURE = "configure_network"


def dc_networks(name: str) -> Callable[[World], list[Case]]:
    """A data center's Networks page (view on the data center) and a network's vNIC Profiles
    (view on the network): Administration Portal pages."""

    def cases(w: World) -> list[Case]:
        return [
            Case(
                name,
                "GET",
                reverse(name, args=[(s.dc if name == "vms:networks" else s.network).pk]),
                need("view", on=[s.dc if name == "vms:networks" else s.network], admin=True),
            )
            for s in sides(w)
        ]

    return cases


NETWORK_POST = {
    "description": "",
    "vm_network": "on",
    "kind": "isolated",
    "ipv4": "",
    "bridge": "",
    "vlan": "",
}


def network_windows(name: str) -> Callable[[World], list[Case]]:
    """New Logical Network (configure_network on the data center), Edit and Remove
    (configure_network on the network), New VM Interface Profile (on the network), Edit and
    Remove VM Interface Profile (on the profile): Administration Portal windows."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            on = {
                "vms:network_new": s.dc,
                "vms:network_edit": s.network,
                "vms:network_remove": s.network,
                "vms:vnic_profile_new": s.network,
                "vms:vnic_profile_edit": s.profile,
                "vms:vnic_profile_remove": s.profile,
            }[name]
            gate = need(CONFIGURE, on=[on], admin=True)
            url = reverse(name, args=[on.pk])
            if name.startswith("vms:network_"):
                data = {**NETWORK_POST, "name": f"net-made-{s.dc.name}"}
            else:
                data = {
                    "name": f"profile-made-{s.dc.name}",
                    "description": "",
                    "port_mirroring": "",
                }
            out += [
                Case(name, "GET", url, gate),
                Case(name, "POST", url, gate, data, inside=s is w.inside),
            ]
        return out

    return cases


def nic_windows(name: str) -> Callable[[World], list[Case]]:
    """A VM's Network Interfaces windows: edit_vm on the VM; the profile an interface is put
    on needs attach_vnic (VnicProfileUser) on it besides; an interface of another VM is a 404
    for everybody."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            gate = need("edit_vm", on=[s.vm])
            args = [s.vm.pk] if name == "vms:nic_new" else [s.vm.pk, s.nic.pk]
            url = reverse(name, args=args)
            data = {
                "name": "nic9",
                "profile": s.profile.pk,
                "model": "e1000",
                "mac": "",
                "link_state": "down",
                "card_status": "plugged",
            }
            if name == "vms:nic_remove":
                data = {}
            out += [
                Case(name, "GET", url, gate),
                Case(name, "POST", url, gate, data, inside=s is w.inside),
            ]
            if name == "vms:nic_new":
                # Tried where the profile may not be picked: the window refuses it.
                usable = need("attach_vnic", on=[s.profile])
                out.append(Case(name, "POST", url, gate, data, refused_unless=usable))
        if name != "vms:nic_new":
            mismatched = [w.inside.vm.pk, w.outside.nic.pk]
            out.append(Case(name, "GET", reverse(name, args=mismatched), NEVER))
        return out

    return cases


MANIPULATE_AFFINITY = "manipulate_affinity_groups"


def affinity_group_windows(name: str) -> Callable[[World], list[Case]]:
    """A cluster's Affinity Groups page (view on the cluster) and the New / Edit / Remove
    Affinity Group windows (manipulate_affinity_groups on the group's cluster)."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            if name == "vms:affinity_groups":
                url = reverse(name, args=[s.cluster.pk])
                out.append(Case(name, "GET", url, need("view", on=[s.cluster], admin=True)))
                continue
            gate = need(MANIPULATE_AFFINITY, on=[s.cluster], admin=True)
            target = s.cluster if name == "vms:affinity_group_new" else s.affinity_group
            url = reverse(name, args=[target.pk])
            data = {
                "name": f"ag-made-{s.dc.name}",
                "description": "",
                "vm_rule": "negative",
                "host_rule": "disabled",
                "vms": [s.vm.pk],
            }
            if name == "vms:affinity_group_remove":
                data = {}
            out += [
                Case(name, "GET", url, gate),
                Case(name, "POST", url, gate, data, inside=s is w.inside),
            ]
            if name == "vms:affinity_group_new":
                # the other data center's VM, posted into this cluster's group: refused
                other = w.outside if s is w.inside else w.inside
                foreign = {**data, "vms": [other.vm.pk]}
                out.append(Case(name, "POST", url, gate, foreign, refused_unless=NEVER))
        return out

    return cases


def hostdev_windows(name: str) -> Callable[[World], list[Case]]:
    """A VM's Host Devices windows (Add device, Remove device, Pin to another host): edit_vm
    on the VM."""

    def cases(w: World) -> list[Case]:
        out = []
        for s in sides(w):
            gate = need("edit_vm", on=[s.vm])
            url = reverse(name, args=[s.vm.pk])
            data = {
                "vms:hostdev_add": {
                    "host": s.host.pk,
                    "shown_host": s.host.pk,
                    "capability": "pci",
                    "op": "ok",
                },
                "vms:hostdev_remove": {"device": 1},
                "vms:hostdev_pin": {"host": s.host.pk},
            }[name]
            out += [
                Case(name, "GET", url, gate),
                Case(name, "POST", url, gate, data, inside=s is w.inside),
            ]
        return out

    return cases


def user_vm_card(w: World) -> list[Case]:
    return [
        Case("user_vm_card", "GET", reverse("user_vm_card", args=[s.vm.pk]), need("run", on=[s.vm]))
        for s in sides(w)
    ]


MANAGE_ROLES = "manage_roles"


def role_new(w: World) -> list[Case]:
    gate = need(MANAGE_ROLES, on=[w.system], admin=True)
    data = {"name": "Made", "description": "", "account_type": "user", "actions": ["login"]}
    url = reverse("role_new")
    return [Case("role_new", "GET", url, gate), Case("role_new", "POST", url, gate, data)]


def role_edit(w: World) -> list[Case]:
    gate = need(MANAGE_ROLES, on=[w.system], admin=True)
    url = reverse("role_edit", args=[w.scratch.pk])
    data = {"name": "Scratch", "description": "edited", "account_type": "admin", "actions": ["run"]}
    return [Case("role_edit", "GET", url, gate), Case("role_edit", "POST", url, gate, data)]


def role_remove(w: World) -> list[Case]:
    gate = need(MANAGE_ROLES, on=[w.system], admin=True)
    url = reverse("role_remove", args=[w.scratch.pk])
    return [Case("role_remove", "GET", url, gate), Case("role_remove", "POST", url, gate, {})]


def engine_config_edit(w: World) -> list[Case]:
    gate = need(MANAGE_ROLES, on=[w.system], admin=True)
    url = reverse("engine_config_edit", args=["MaxNumberOfConcurrentMigrations"])
    return [
        Case("engine_config_edit", "GET", url, gate),
        Case("engine_config_edit", "POST", url, gate, {"value": "4"}),
        Case(
            "engine_config_edit",
            "GET",
            reverse("engine_config_edit", args=["NoSuchKey"]),
            Need(admin=True, never=True),
        ),
    ]


def quota_edit(w: World) -> list[Case]:
    gate = need(MANAGE_ROLES, on=[w.system], admin=True)
    url = reverse("vms:quota_edit", args=[w.newcomer.pk])
    data = {"max_vms": 3, "max_disk_gib": ""}
    return [
        Case("vms:quota_edit", "GET", url, gate),
        Case("vms:quota_edit", "POST", url, gate, data),
    ]


def permission_windows(name: str) -> Callable[[World], list[Case]]:
    """The Permissions sub-tab (manage_permissions, or an administrative role, on the object:
    `view` alone does not show who holds which role) and its Add and Remove windows
    (manage_permissions; an administrative role is handed out only by someone holding one
    there), on every kind of object permissions hang on."""

    def cases(w: World) -> list[Case]:
        assert set(KIND_OBJECTS) == set(PERMISSION_KINDS), "a Permissions kind without a rule"
        out = []
        for kind in PERMISSION_KINDS:
            for obj in kind_objects(w, kind):
                if name == "permissions":
                    url = reverse(name, args=[kind, obj.pk])
                    gate = need(
                        "manage_permissions",
                        on=[obj],
                        also=KIND_SEEN_WITH.get(kind, ()),
                        or_admin_role=True,
                    )
                    out.append(Case(name, "GET", url, gate))
                    continue
                gate = need("manage_permissions", on=[obj], also=KIND_SEEN_WITH.get(kind, ()))
                if name == "permission_add":
                    url = reverse(name, args=[kind, obj.pk])
                    role = Role.objects.get(name="UserRole").pk
                    data = {"principal": f"user:{w.newcomer.pk}", "role": role}
                else:
                    url = reverse(name, args=[kind, obj.pk, "user", w.row_id(obj)])
                    data = {}
                inside = obj not in kind_objects(w, kind)[1:]
                out += [
                    Case(name, "GET", url, gate),
                    Case(name, "POST", url, gate, data, inside=inside),
                ]
                if name == "permission_add":
                    # An administrative role (it opens the Administration Portal), made only of
                    # actions the granter holds: refused unless they hold one there themselves.
                    # Tried everywhere (inside too): only where it must be refused.
                    admin_data = {**data, "role": w.scratch_admin.pk}
                    out.append(
                        Case(
                            name,
                            "POST",
                            url,
                            gate,
                            admin_data,
                            refused_unless=need(
                                "manage_permissions",
                                on=[obj],
                                also=KIND_SEEN_WITH.get(kind, ()),
                                admin_role=True,
                            ),
                        )
                    )
        return out

    return cases


def home(w: World) -> list[Case]:
    def landing(who: Who) -> str:
        return reverse("vms:list") if who.is_admin() else reverse("user_portal")

    return [Case("home", "GET", reverse("home"), LOGGED_IN, redirect=landing)]


def logout(w: World) -> list[Case]:
    return [Case("logout", "POST", reverse("logout"), PUBLIC, {}, redirect=lambda who: "/login/")]


RULES: dict[str, Rule] = {
    "login": Rule(PUBLIC_KIND, lambda w: [Case("login", "GET", reverse("login"), PUBLIC)]),
    "logout": Rule(PUBLIC_KIND + " (POST; tried last)", logout),
    "home": Rule(USER + ": administrators to vms:list, others to user_portal", home),
    "user_portal": Rule(
        USER, lambda w: [Case("user_portal", "GET", reverse("user_portal"), LOGGED_IN)]
    ),
    "password_change": Rule(
        USER + " (one's own password)",
        lambda w: [
            Case("password_change", "GET", reverse("password_change"), LOGGED_IN),
            Case(
                "password_change",
                "POST",
                reverse("password_change"),
                LOGGED_IN,
                {"old_password": "wrong", "new_password1": "x", "new_password2": "x"},
            ),
        ],
    ),
    "user_vm_card": Rule(OBJECT + " (run)", user_vm_card),
    "user_vm_snapshots": Rule(
        OBJECT + " (snapshots)",
        lambda w: [
            Case(
                "user_vm_snapshots",
                "GET",
                reverse("user_vm_snapshots", args=[s.vm.pk]),
                need("snapshots", on=[s.vm]),
            )
            for s in sides(w)
        ],
    ),
    "events": admin_page("events"),
    "jobs": admin_page("jobs"),
    "configure": Rule(
        ADMIN_PAGE,
        lambda w: [
            Case("configure", "GET", reverse("configure"), ADMIN),
            Case("configure", "GET", reverse("configure") + "?tab=system", ADMIN),
            Case("configure", "GET", reverse("configure") + "?tab=engine", ADMIN),
        ],
    ),
    "engine_config_edit": Rule(OBJECT + " (manage_roles on the System)", engine_config_edit),
    "role_new": Rule(OBJECT + " (manage_roles on the System)", role_new),
    "role_edit": Rule(OBJECT + " (manage_roles on the System)", role_edit),
    "role_remove": Rule(OBJECT + " (manage_roles on the System)", role_remove),
    "permissions": Rule(
        OBJECT + " (manage_permissions or an administrative role)",
        permission_windows("permissions"),
    ),
    "permission_add": Rule(
        SHARED + " (manage_permissions; an administrative role to hand one out)",
        permission_windows("permission_add"),
    ),
    "permission_remove": Rule(
        SHARED + " (manage_permissions)", permission_windows("permission_remove")
    ),
    "vms:list": admin_page("vms:list"),
    "vms:table": admin_page("vms:table"),
    "vms:hosts": admin_page("vms:hosts"),
    "vms:clusters": admin_page("vms:clusters"),
    "vms:datacenters": admin_page("vms:datacenters"),
    "vms:networks_all": admin_page("vms:networks_all"),
    "vms:detail": vm_pages("vms:detail"),
    "vms:row": vm_pages("vms:row"),
    "vms:details": Rule(OBJECT + " (view; every detail tab)", vm_details),
    "vms:edit": Rule(SHARED + " (edit_vm)", vm_edit),
    "vms:console": Rule(OBJECT + " (console; both portals)", console_pages("vms:console")),
    "vms:console_file": Rule(
        OBJECT + " (console; both portals)", console_pages("vms:console_file")
    ),
    "vms:action": Rule(SHARED + " (each VM action needs the role action of its name)", vm_action),
    "vms:new": Rule(SHARED + " (create_vm or create_vm_from_template on some cluster)", vm_new),
    "vms:snapshot_create": Rule(SHARED + " (snapshots)", snapshot_windows("vms:snapshot_create")),
    "vms:snapshot_preview": Rule(
        SHARED + " (snapshots; the snapshot of that VM)", snapshot_windows("vms:snapshot_preview")
    ),
    "vms:snapshot_clone": Rule(
        SHARED + " (snapshots; the snapshot of that VM)", snapshot_windows("vms:snapshot_clone")
    ),
    "vms:snapshot_delete": Rule(
        SHARED + " (snapshots; the snapshot of that VM)", snapshot_windows("vms:snapshot_delete")
    ),
    "vms:snapshot_end_preview": Rule(
        SHARED + " (snapshots; Commit or Undo)", snapshot_windows("vms:snapshot_end_preview")
    ),
    "vms:host_new": Rule(ADMIN_PAGE + "; add_host anywhere, else 404", host_new),
    "vms:cluster_edit": Rule(OBJECT + " (edit_cluster)", cluster_edit),
    "vms:cluster_details": Rule(OBJECT + " (view; every detail tab)", cluster_details),
    "vms:cluster_new": Rule(
        ADMIN_PAGE + "; create_cluster on a data center, else 404", cluster_new
    ),
    "vms:cluster_remove": Rule(
        OBJECT + " (remove_cluster)",
        object_windows("vms:cluster_remove", "remove_cluster", "cluster", lambda s: {}),
    ),
    "vms:datacenter_new": Rule(OBJECT + " (create_datacenter on the System)", datacenter_new),
    "vms:datacenter_edit": Rule(
        OBJECT + " (edit_datacenter)",
        object_windows(
            "vms:datacenter_edit",
            "edit_datacenter",
            "dc",
            lambda s: {"name": s.dc.name, "description": "edited"},
        ),
    ),
    "vms:datacenter_remove": Rule(
        OBJECT + " (remove_datacenter)",
        object_windows("vms:datacenter_remove", "remove_datacenter", "dc", lambda s: {}),
    ),
    "vms:host_edit": Rule(OBJECT + " (edit_host; another cluster needs add_host there)", host_edit),
    "vms:host_remove": Rule(
        OBJECT + " (remove_host)",
        object_windows("vms:host_remove", "remove_host", "host", lambda s: {}),
    ),
    "vms:host_maintenance": Rule(
        OBJECT + " (manipulate_host)",
        object_windows("vms:host_maintenance", "manipulate_host", "host", lambda s: {}),
    ),
    "vms:host_activate": Rule(
        OBJECT + " (manipulate_host)",
        object_windows("vms:host_activate", "manipulate_host", "host", lambda s: {}),
    ),
    "vms:affinity_groups": Rule(
        OBJECT + " (view on the cluster)", affinity_group_windows("vms:affinity_groups")
    ),
    "vms:affinity_group_new": Rule(
        OBJECT + " (manipulate_affinity_groups on the cluster; VMs of another cluster refused)",
        affinity_group_windows("vms:affinity_group_new"),
    ),
    "vms:affinity_group_edit": Rule(
        OBJECT + " (manipulate_affinity_groups on the group's cluster)",
        affinity_group_windows("vms:affinity_group_edit"),
    ),
    "vms:affinity_group_remove": Rule(
        OBJECT + " (manipulate_affinity_groups on the group's cluster)",
        affinity_group_windows("vms:affinity_group_remove"),
    ),
    "vms:host_confirm_rebooted": Rule(
        OBJECT + " (manipulate_host)",
        object_windows("vms:host_confirm_rebooted", "manipulate_host", "host", lambda s: {}),
    ),
    "vms:quotas": Rule(
        OBJECT + " (manage_roles on the System)",
        lambda w: [
            Case(
                "vms:quotas",
                "GET",
                reverse("vms:quotas"),
                need(MANAGE_ROLES, on=[w.system], admin=True),
            )
        ],
    ),
    "vms:quota_edit": Rule(OBJECT + " (manage_roles on the System)", quota_edit),
    "vms:networks": Rule(OBJECT + " (view on the data center)", dc_networks("vms:networks")),
    "vms:network_profiles": Rule(
        OBJECT + " (view on the network)", dc_networks("vms:network_profiles")
    ),
    "vms:network_new": Rule(
        OBJECT + " (configure_network on the data center)", network_windows("vms:network_new")
    ),
    "vms:network_edit": Rule(
        OBJECT + " (configure_network on the network)", network_windows("vms:network_edit")
    ),
    "vms:network_remove": Rule(
        OBJECT + " (configure_network on the network)", network_windows("vms:network_remove")
    ),
    "vms:vnic_profile_new": Rule(
        OBJECT + " (configure_network on the network)", network_windows("vms:vnic_profile_new")
    ),
    "vms:vnic_profile_edit": Rule(
        OBJECT + " (configure_network on the profile)", network_windows("vms:vnic_profile_edit")
    ),
    "vms:vnic_profile_remove": Rule(
        OBJECT + " (configure_network on the profile)",
        network_windows("vms:vnic_profile_remove"),
    ),
    "vms:nic_new": Rule(
        SHARED + " (edit_vm; the profile needs attach_vnic)", nic_windows("vms:nic_new")
    ),
    "vms:nic_edit": Rule(
        SHARED + " (edit_vm; the VM's own interface)", nic_windows("vms:nic_edit")
    ),
    "vms:nic_remove": Rule(
        SHARED + " (edit_vm; the VM's own interface)", nic_windows("vms:nic_remove")
    ),
    "vms:hostdev_add": Rule(SHARED + " (edit_vm on the VM)", hostdev_windows("vms:hostdev_add")),
    "vms:hostdev_remove": Rule(
        SHARED + " (edit_vm on the VM)", hostdev_windows("vms:hostdev_remove")
    ),
    "vms:hostdev_pin": Rule(SHARED + " (edit_vm on the VM)", hostdev_windows("vms:hostdev_pin")),
    "storage:domains": admin_page("storage:domains"),
    "storage:disks": admin_page("storage:disks"),
    "storage:domain_new": Rule(
        ADMIN_PAGE + "; create_storage_domain on a data center, else 404", domain_new
    ),
    "storage:domain_edit": Rule(
        OBJECT + " (edit_storage on the domain)",
        domain_window("storage:domain_edit", lambda s: {"name": f"renamed-{s.sd.name}"}),
    ),
    "storage:domain_remove": Rule(
        OBJECT + " (edit_storage on the domain)",
        domain_window("storage:domain_remove", lambda s: {"format_domain": "on"}),
    ),
    "storage:domain_attach": Rule(
        OBJECT + " (edit_storage on the domain; create_storage_domain on the data center)",
        domain_window("storage:domain_attach", lambda s: {"data_center": s.dc.pk}),
    ),
    "storage:domain_action": Rule(
        OBJECT + " (edit_storage on the domain: Maintenance, Activate, Detach)", domain_actions
    ),
    "storage:image_upload": Rule(
        OBJECT + " (manage_images on the ISO domain)", image_windows("storage:image_upload")
    ),
    "storage:image_chunk": Rule(
        OBJECT + " (manage_images on the image's ISO domain; POST only)",
        image_windows("storage:image_chunk", methods=("POST",)),
    ),
    "storage:image_state": Rule(
        OBJECT + " (manage_images on the image's ISO domain)",
        image_windows("storage:image_state", methods=("GET",)),
    ),
    "storage:image_remove": Rule(
        OBJECT + " (manage_images on the image's ISO domain)",
        image_windows("storage:image_remove"),
    ),
    "storage:image_guest_tools": Rule(
        OBJECT + " (manage_images on the image's ISO domain)",
        image_windows("storage:image_guest_tools"),
    ),
    "storage:disk_attach": Rule(
        OBJECT + " (edit_disk on the floating disk)",
        floating_disk_window("storage:disk_attach", lambda s: {"vm": s.vm.pk}),
    ),
    "storage:disk_remove": Rule(
        OBJECT + " (edit_disk on the floating disk)",
        floating_disk_window("storage:disk_remove", lambda s: {}),
    ),
}

WEBSOCKET_RULES = {
    "ws-live": "websocket: a topic vm.<id> needs view on the VM; perms needs manage_permissions "
    "or an administrative role somewhere; else refused",
    "ws-console": "websocket: console on the VM, else closed with 4404 (anonymous: 4401)",
}


def url_names(patterns, namespace=()) -> list[str]:
    names = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = (*namespace, pattern.namespace) if pattern.namespace else namespace
            names += url_names(pattern.url_patterns, ns)
        else:
            assert pattern.name, f"URL pattern {pattern.pattern} has no name"
            names.append(":".join((*namespace, pattern.name)))
    return names
