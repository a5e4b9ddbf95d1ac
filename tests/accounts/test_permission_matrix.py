"""The permission matrix: every URL of the project, and the live websocket, tried by users
holding each built-in role at each scope it makes sense at, on an object inside the scope and
on one in another data center.

RULES below describes every URL name: what kind of URL it is, what it needs, and how to fill
its arguments. The matrix walks the project's URL patterns and fails on a name without a
rule, so a view added later cannot ship without someone deciding its check. Expectations
come from the catalogue's role tables and a map of which objects lie under which written out
here by hand, never from the resolver under test.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.contrib.auth.models import AnonymousUser
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve, reverse
from factories import (
    ClusterFactory,
    DataCenterFactory,
    DiskFactory,
    HostFactory,
    StorageDomainFactory,
    SuperUserFactory,
    UserFactory,
    VMFactory,
    grant,
)
from guardian.models import UserObjectPermission
from helpers import HX

from accounts.catalogue import ACTIONS, BUILTIN_ROLES
from accounts.models import Role, RoleAction, System
from accounts.views import PERMISSION_KINDS
from portal.consumers import LiveConsumer
from vms.choices import SnapshotAction, SnapshotStatus, VMAction
from vms.models import Network, Snapshot, Template
from vms.views import DETAIL_TABS


@pytest.fixture(autouse=True)
def _quiet_and_quick(settings):
    """The thousands of expected 403s and 404s are not logged, and sessions live in a cookie
    (one query less on each of the matrix's requests)."""
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


# -- who asks ---------------------------------------------------------------------------------

# Each built-in role at the scopes the chapter applies it at (its role tables), one scope
# per role where more would only repeat the same answers.
ROLE_SCOPES = [
    ("SuperUser", "system"),
    ("DataCenterAdmin", "system"),
    ("DataCenterAdmin", "datacenter"),
    ("ClusterAdmin", "datacenter"),
    ("ClusterAdmin", "cluster"),
    ("NetworkAdmin", "datacenter"),
    ("NetworkAdmin", "network"),
    ("TemplateAdmin", "datacenter"),
    ("TemplateAdmin", "template"),
    ("UserRole", "system"),
    ("UserRole", "cluster"),
    ("UserRole", "vm"),
    ("PowerUserRole", "system"),
    ("PowerUserRole", "datacenter"),
    ("PowerUserRole", "cluster"),
    ("UserVmEngine", "vm"),
    ("UserTemplateBasedVm", "datacenter"),
    ("UserTemplateBasedVm", "template"),
    ("VmCreator", "system"),
    ("VmCreator", "cluster"),
    ("DiskCreator", "storagedomain"),
    ("TemplateCreator", "datacenter"),
    ("VnicProfileUser", "network"),
]
# Besides the roles: nobody logged in, an account with no role, a superuser account.
OTHERS = [("anonymous", None), ("no role", None), ("superuser account", None)]
WHO = OTHERS + ROLE_SCOPES


def who_id(who) -> str:
    role, scope = who
    return role if scope is None else f"{role}@{scope}"


def test_every_builtin_role_is_in_the_matrix():
    assert {role for role, _ in ROLE_SCOPES} == set(BUILTIN_ROLES)


# -- the world --------------------------------------------------------------------------------


def key(obj) -> tuple[str, int]:
    return (obj._meta.label_lower, obj.pk)


@dataclass
class Side:
    """One data center and one of everything in it."""

    dc: object
    cluster: object
    host: object
    vm: object
    disk: object
    floating: object
    sd: object
    network: object
    template: object
    snapshot: object


@dataclass
class World:
    system: System
    inside: Side
    outside: Side
    scratch: Role  # a custom role nobody holds
    scratch_admin: Role  # a custom administrative role made of "view" alone, nobody holds it
    bystander: object  # holds UserRole directly on every object (the rows Remove is tried on)
    newcomer: object  # the user Add Permission is tried with
    under: dict = field(default_factory=dict)  # object key -> keys of it and everything above

    def row_id(self, obj) -> int:
        """The bystander's own permission row on `obj`."""
        return UserObjectPermission.objects.get(
            user=self.bystander,
            content_type=ContentType.objects.get_for_model(type(obj)),
            object_pk=str(obj.pk),
        ).pk


# Permissions kind (accounts.views.PERMISSION_KINDS) -> the Side attribute it is tried on.
# Storage is seen with view_storage (the Data Centers and Storage tabs): a storage domain's
# Permissions window needs it too, so a DataCenterAdmin does not administer its storage.
KIND_OBJECTS = {
    "system": None,
    "datacenter": "dc",
    "cluster": "cluster",
    "host": "host",
    "vm": "vm",
    "storagedomain": "sd",
    "network": "network",
    "template": "template",
}
KIND_SEEN_WITH = {"storagedomain": ("view_storage",)}
SCOPE_OBJECTS = {
    "system": None,
    "datacenter": "dc",
    "cluster": "cluster",
    "vm": "vm",
    "storagedomain": "sd",
    "network": "network",
    "template": "template",
}


def build_world() -> World:
    system = System.get()
    sides = []
    for label in ("in", "out"):
        dc = DataCenterFactory(name=f"dc-{label}")
        cluster = ClusterFactory(name=f"cluster-{label}", data_center=dc)
        host = HostFactory(name=f"host-{label}", cluster=cluster)
        sd = StorageDomainFactory(name=f"data-{label}", data_center=dc)
        vm = VMFactory(name=f"vm-{label}", host=host)
        disk = DiskFactory(vm=vm, storage_domain=sd)
        floating = DiskFactory(vm=None, alias=f"floating-{label}", storage_domain=sd, host=host)
        network = Network.objects.create(name=f"net-{label}", data_center=dc)
        template = Template.objects.create(name=f"tpl-{label}", data_center=dc)
        snapshot = Snapshot.objects.create(
            vm=vm, description=f"snap-{label}", status=SnapshotStatus.OK, memory_mb=1024, vcpus=1
        )
        sides.append(Side(dc, cluster, host, vm, disk, floating, sd, network, template, snapshot))
    scratch = Role.objects.create(name="Scratch", description="unassigned")
    RoleAction.objects.create(role=scratch, action="view")
    scratch_admin = Role.objects.create(
        name="ScratchAdmin", description="unassigned", is_admin=True
    )
    RoleAction.objects.create(role=scratch_admin, action="view")
    world = World(
        system=system,
        inside=sides[0],
        outside=sides[1],
        scratch=scratch,
        scratch_admin=scratch_admin,
        bystander=UserFactory(username="bystander"),
        newcomer=UserFactory(username="newcomer"),
    )
    # What lies under what, written out: system > data center > cluster > host, VM;
    # data center > storage domain, network, template; a disk under its VM and its domain.
    top = {key(system)}
    world.under[key(system)] = top
    for s in sides:
        dc = top | {key(s.dc)}
        cluster = dc | {key(s.cluster)}
        vm = cluster | {key(s.vm)}
        sd = dc | {key(s.sd)}
        world.under.update(
            {
                key(s.dc): dc,
                key(s.cluster): cluster,
                key(s.host): cluster | {key(s.host)},
                key(s.vm): vm,
                key(s.sd): sd,
                key(s.network): dc | {key(s.network)},
                key(s.template): dc | {key(s.template)},
                key(s.disk): vm | sd | {key(s.disk)},
                key(s.floating): sd | {key(s.floating)},
            }
        )
    for kind in KIND_OBJECTS:
        for obj in kind_objects(world, kind):
            grant(world.bystander, "UserRole", obj)
    return world


def kind_objects(world: World, kind: str) -> list:
    attr = KIND_OBJECTS[kind]
    if attr is None:
        return [world.system]
    return [getattr(world.inside, attr), getattr(world.outside, attr)]


def scope_object(world: World, scope: str):
    attr = SCOPE_OBJECTS[scope]
    return world.system if attr is None else getattr(world.inside, attr)


@dataclass
class Who:
    """The oracle: what a user holding `role` on `scope` may do, from the catalogue alone."""

    label: str
    world: World
    anonymous: bool = False
    superuser: bool = False
    actions: frozenset = frozenset()
    admin: bool = False
    scope: tuple | None = None

    def holds(self, action: str, obj) -> bool:
        if self.superuser:
            return True
        return action in self.actions and self.scope in self.world.under[key(obj)]

    def is_admin(self) -> bool:
        return self.superuser or self.admin

    def admin_on(self, obj) -> bool:
        """An administrative role on `obj` or above it."""
        return self.superuser or (self.admin and self.scope in self.world.under[key(obj)])


def make_who(world: World, who) -> tuple[Who, object]:
    role, scope = who
    if role == "anonymous":
        return Who(who_id(who), world, anonymous=True), None
    if role == "no role":
        return Who(who_id(who), world), UserFactory(username="norole")
    if role == "superuser account":
        return Who(who_id(who), world, superuser=True), SuperUserFactory(username="root")
    user = UserFactory(username="actor")
    target = scope_object(world, scope)
    grant(user, role, target)
    is_admin, _description, actions = BUILTIN_ROLES[role]
    return Who(
        who_id(who), world, actions=frozenset(actions), admin=is_admin, scope=key(target)
    ), user


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
            gate = need(action, on=[s.vm])  # the VM action's name is the role action's
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
        data = {"description": "edited", "shutdown_reason_enabled": "on", "shutdown_timeout": 60}
        cases += [
            Case("vms:cluster_edit", "GET", url, gate),
            Case("vms:cluster_edit", "POST", url, gate, data, inside=s is w.inside),
        ]
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
        ],
    ),
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
    "vms:detail": vm_pages("vms:detail"),
    "vms:row": vm_pages("vms:row"),
    "vms:details": Rule(OBJECT + " (view; every detail tab)", vm_details),
    "vms:edit": Rule(SHARED + " (edit_vm)", vm_edit),
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
    "storage:domains": admin_page("storage:domains"),
    "storage:disks": admin_page("storage:disks"),
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
    "or an administrative role somewhere; else refused"
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


def test_every_url_has_a_rule():
    from portal.asgi import websocket_urlpatterns

    http = url_names(get_resolver().url_patterns)
    websocket = url_names(websocket_urlpatterns)
    assert len(http) == len(set(http)), "a URL name is used twice"
    missing = sorted(set(http) - set(RULES)) + sorted(set(websocket) - set(WEBSOCKET_RULES))
    assert not missing, f"URL names without a rule in the permission matrix: {missing}"
    stale = sorted(set(RULES) - set(http)) + sorted(set(WEBSOCKET_RULES) - set(websocket))
    assert not stale, f"rules for URL names that no longer exist: {stale}"


# -- running the matrix -----------------------------------------------------------------------


def _app_tables() -> list[str]:
    tables = set()
    for app in ("auth", "guardian", "accounts", "vms", "storage", "portal"):
        tables |= {m._meta.db_table for m in apps.get_app_config(app).get_models()}
    return sorted(tables)


def fingerprint() -> tuple:
    """A digest of every row of the project's tables (and users, groups and guardian's):
    whatever a refused POST might have changed (one query)."""
    qn = connection.ops.quote_name
    digests = ", ".join(
        f"(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {qn(table)} t)"
        for table in _app_tables()
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {digests}")
        return cursor.fetchone()


def expected(case: Case, who: Who) -> str:
    if case.need.public:
        return "ok"
    if who.anonymous:
        return "login"
    if case.need.admin and not who.is_admin():
        return "403"
    if not case.need.met(who):
        return "404"
    if case.refused_unless is not None and not case.refused_unless.met(who):
        return "refused"
    return "ok"


def outcome(response) -> str:
    code = response.status_code
    if code == 302 and response.url.startswith("/login/?next="):
        return "login"
    if code in (403, 404):
        return str(code)
    if code in (200, 302):
        return "ok"
    return f"status {code}"


def run(client: Client, case: Case, who: Who) -> str | None:
    """Send one request; the mismatch with what the rule table expects, or None."""
    assert resolve(case.url.split("?")[0]).view_name == case.name, case.url
    want = expected(case, who)
    changes_checked = case.method == "POST"
    before = fingerprint() if changes_checked else None
    if case.method == "GET":
        response = client.get(case.url)
    else:
        response = client.post(case.url, case.data or {}, headers=HX)
    got = outcome(response)
    if want == "refused" and got == "ok":
        got = "refused"
    where = f"{case.method} {case.url} ({case.name})"
    if got != want:
        return f"{where}: expected {want}, got {got}"
    if case.redirect is not None and want == "ok":
        if response.status_code != 302 or response.url != case.redirect(who):
            return f"{where}: expected a redirect to {case.redirect(who)}, got {response.status_code} {response.get('Location')}"
    if changes_checked and fingerprint() != before:
        return f"{where}: answered {got} but changed something"
    return None


def all_cases(world: World) -> list[tuple[Rule, Case]]:
    return [(rule, case) for rule in RULES.values() for case in rule.cases(world)]


@pytest.mark.django_db
@pytest.mark.parametrize("who", WHO, ids=[who_id(w) for w in WHO])
def test_matrix(who):
    """Every GET, on objects inside and outside the scope; every POST on the other data
    center's objects or behind a global gate that must be refused (a 403, a 404, the login page
    or a form's refusal), each leaving the database as it was."""
    world = build_world()
    oracle, user = make_who(world, who)
    client = Client()
    if user is not None:
        client.force_login(user)
    cases = all_cases(world)
    assert {case.name for _, case in cases} == set(RULES), "a rule that tries nothing"
    gets = [rc for rc in cases if rc[1].method == "GET"]
    posts = [
        rc
        for rc in cases
        if rc[1].method == "POST"
        and rc[1].name != "logout"
        and not rc[1].inside
        and expected(rc[1], oracle) != "ok"
    ]
    last = [rc for rc in cases if rc[1].name == "logout"]
    failures, known = [], []
    for rule, case in gets + posts + last:
        problem = run(client, case, oracle)
        if problem and rule.known_bug:
            known.append(f"{problem} [known: {rule.known_bug}]")
        elif problem:
            failures.append(problem)
    assert not failures, f"{oracle.label}:\n" + "\n".join(failures + known)
    if known:
        pytest.xfail("\n".join(known))


# -- the live websocket -----------------------------------------------------------------------


@pytest.fixture
def own_channel_prefix(settings):
    """A channel-layer prefix of this test's own, so no other run's messages reach it."""
    import uuid

    layers = {name: dict(conf) for name, conf in settings.CHANNEL_LAYERS.items()}
    layers["default"]["CONFIG"] = {
        **layers["default"]["CONFIG"],
        "prefix": f"matrix-{uuid.uuid4().hex[:12]}",
    }
    settings.CHANNEL_LAYERS = layers


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_websocket_matrix(own_channel_prefix):
    """Subscribing to vm.<id> is accepted exactly where the user may see the VM; to "perms"
    (the Permissions windows' topic) where they may read some Permissions window."""
    world = await database_sync_to_async(build_world)()
    failures = []
    for who in WHO:
        oracle, user = await database_sync_to_async(make_who)(world, who)
        communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
        communicator.scope["user"] = user or AnonymousUser()
        if oracle.anonymous:
            if await communicator.connect() != (False, 4401):
                failures.append(f"{oracle.label}: anonymous socket was not closed with 4401")
            continue
        ok, _ = await communicator.connect()
        assert ok, oracle.label
        topics = [f"vm.{world.inside.vm.pk}", f"vm.{world.outside.vm.pk}", "perms"]
        await communicator.send_json_to({"subscribe": topics})
        reply = await communicator.receive_json_from(timeout=5)
        want = [t for t, s in zip(topics, sides(world), strict=False) if oracle.holds("view", s.vm)]
        if oracle.is_admin() or "manage_permissions" in oracle.actions:
            want.append("perms")
        if reply != {"subscribed": want, "refused": [t for t in topics if t not in want]}:
            failures.append(f"{oracle.label}: expected {want} accepted, got {reply}")
        await communicator.disconnect()
        # The next role's user takes the same name: drop this one.
        if user is not None:
            await database_sync_to_async(user.delete)()
    assert not failures, "\n".join(failures)
