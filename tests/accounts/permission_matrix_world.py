"""Who asks and the world the permission matrix (test_permission_matrix.py) is tried in:\neach built-in role at the scopes it makes sense at, and the objects inside and outside them.\n"""

from dataclasses import dataclass, field

from django.contrib.contenttypes.models import ContentType
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

from accounts.catalogue import BUILTIN_ROLES
from accounts.models import Role, RoleAction, System
from storage.models import IsoImage
from vms.choices import SnapshotStatus
from vms.models import AffinityGroup, Network, NetworkInterface, Snapshot, Template, VnicProfile

# -- who asks ---------------------------------------------------------------------------------

# Each built-in role at the scopes the chapter applies it at (its role tables), one scope
# per role where more would only repeat the same answers.
ROLE_SCOPES = [
    ("SuperUser", "system"),
    ("DataCenterAdmin", "system"),
    ("DataCenterAdmin", "datacenter"),
    ("ClusterAdmin", "datacenter"),
    ("ClusterAdmin", "cluster"),
    ("HostAdmin", "cluster"),
    ("HostAdmin", "host"),
    ("NetworkAdmin", "datacenter"),
    ("NetworkAdmin", "network"),
    ("StorageAdmin", "datacenter"),
    ("StorageAdmin", "storagedomain"),
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
    ("VnicProfileUser", "vnicprofile"),
]
# Besides the roles: nobody logged in, an account with no role, a superuser account.
OTHERS = [("anonymous", None), ("no role", None), ("superuser account", None)]
WHO = OTHERS + ROLE_SCOPES


def who_id(who) -> str:
    role, scope = who
    return role if scope is None else f"{role}@{scope}"


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
    profile: object  # the network's default vNIC profile
    nic: object  # the VM's nic1, on that profile
    iso: object = None  # an ISO domain of the data center
    image: object = None  # an image of that ISO domain
    affinity_group: object = None  # an affinity group of the cluster, holding the VM


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
    "vnicprofile": "profile",
    "template": "template",
}
KIND_SEEN_WITH = {"storagedomain": ("view_storage",)}
SCOPE_OBJECTS = {
    "system": None,
    "datacenter": "dc",
    "cluster": "cluster",
    "host": "host",
    "vm": "vm",
    "storagedomain": "sd",
    "network": "network",
    "vnicprofile": "profile",
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
        profile = VnicProfile.objects.create(network=network, name=network.name)
        nic = NetworkInterface.objects.create(
            vm=vm, name="nic1", profile=profile, mac=f"02:00:00:00:00:0{len(sides) + 1}"
        )
        iso = StorageDomainFactory(name=f"iso-{label}", data_center=dc, domain_function="iso")
        image = IsoImage.objects.create(domain=iso, name=f"tools-{label}.iso", size_bytes=1 << 20)
        affinity_group = AffinityGroup.objects.create(cluster=cluster, name=f"ag-{label}")
        affinity_group.vms.add(vm)
        sides.append(
            Side(
                dc,
                cluster,
                host,
                vm,
                disk,
                floating,
                sd,
                network,
                template,
                snapshot,
                profile,
                nic,
                iso,
                image,
                affinity_group,
            )
        )
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
    # data center > storage domain, network > vNIC profile, template; a disk under its VM and
    # its domain.
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
                key(s.profile): dc | {key(s.network), key(s.profile)},
                key(s.template): dc | {key(s.template)},
                key(s.disk): vm | sd | {key(s.disk)},
                key(s.floating): sd | {key(s.floating)},
                key(s.iso): dc | {key(s.iso)},
                key(s.image): dc | {key(s.iso), key(s.image)},
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
