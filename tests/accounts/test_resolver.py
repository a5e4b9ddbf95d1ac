"""The permission resolver: scope, inheritance, one query, and what the Permissions tab says."""

import pytest
from django.contrib.auth.models import Group
from factories import (
    ClusterFactory,
    DataCenterFactory,
    DiskFactory,
    HostFactory,
    UserFactory,
    VMFactory,
)
from helpers import html_one

from accounts.models import Role, System
from accounts.permissions import (
    can,
    can_subscribe,
    is_admin,
    object_permissions,
    permitted_actions,
    restrict,
)
from accounts.services import (
    assignable_roles,
    permission_add,
    permission_grant_creator,
    permission_remove,
)
from portal.kernel.errors import ActionRefused
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def grant(user, role_name, obj):
    from guardian.shortcuts import assign_perm

    from accounts.services import role_permission

    assign_perm(role_permission(Role.objects.get(name=role_name), type(obj)), user, obj)


@pytest.fixture
def world():
    dc1, dc2 = DataCenterFactory(), DataCenterFactory()
    c1a = ClusterFactory(data_center=dc1)
    c1b = ClusterFactory(data_center=dc1)
    c2 = ClusterFactory(data_center=dc2)
    vms = {
        "a1": VMFactory(host=HostFactory(cluster=c1a)),
        "a2": VMFactory(host=HostFactory(cluster=c1a)),
        "b1": VMFactory(host=HostFactory(cluster=c1b)),
        "x1": VMFactory(host=HostFactory(cluster=c2)),
    }
    return {"dc1": dc1, "dc2": dc2, "c1a": c1a, "c1b": c1b, "c2": c2, **vms}


def visible(user, action="view"):
    return set(restrict(user, VirtualMachine.objects.all(), action).values_list("name", flat=True))


def names(world, *keys):
    return {world[k].name for k in keys}


def test_builtin_roles_exist_after_migrate():
    assert set(Role.objects.filter(builtin=True).values_list("name", flat=True)) >= {
        "SuperUser",
        "DataCenterAdmin",
        "ClusterAdmin",
        "NetworkAdmin",
        "TemplateAdmin",
        "UserRole",
        "PowerUserRole",
        "UserVmEngine",
        "UserTemplateBasedVm",
        "VmCreator",
        "DiskCreator",
        "TemplateCreator",
        "VnicProfileUser",
    }


def test_no_grant_sees_nothing(world):
    assert visible(UserFactory()) == set()


def test_scopes_and_inheritance(world):
    user = UserFactory()
    grant(user, "ClusterAdmin", world["c1a"])
    assert visible(user) == names(world, "a1", "a2")
    grant(user, "UserRole", world["x1"])
    assert visible(user) == names(world, "a1", "a2", "x1")
    dc_admin = UserFactory()
    grant(dc_admin, "DataCenterAdmin", world["dc1"])
    assert visible(dc_admin) == names(world, "a1", "a2", "b1")
    system = UserFactory()
    grant(system, "UserRole", System.get())
    assert visible(system) == names(world, "a1", "a2", "b1", "x1")


def test_action_filter(world):
    user = UserFactory()
    grant(user, "UserRole", world["a1"])
    assert visible(user, "run") == names(world, "a1")
    assert visible(user, "remove") == set()
    acts = permitted_actions(user, [world["a1"], world["a2"]], ["run", "remove", "shutdown"])
    assert acts[world["a1"].pk] == {"run", "shutdown"}
    assert acts[world["a2"].pk] == set()


def test_group_grants_count(world):
    user = UserFactory()
    group = Group.objects.create(name="ops")
    group.user_set.add(user)
    from guardian.shortcuts import assign_perm

    from accounts.services import role_permission

    assign_perm(
        role_permission(Role.objects.get(name="ClusterAdmin"), type(world["c1b"])),
        group,
        world["c1b"],
    )
    assert visible(user) == names(world, "b1")
    assert is_admin(user)


def test_permission_part_is_one_query(world, django_assert_num_queries):
    user = UserFactory()
    grant(user, "DataCenterAdmin", world["dc2"])
    grant(user, "ClusterAdmin", world["c1b"])
    grant(user, "UserRole", world["a1"])
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()
    for model in ("accounts.system", "vms.datacenter", "vms.cluster", "vms.virtualmachine"):
        ContentType.objects.get_by_natural_key(*model.split("."))
    # One query reads the user's grants (data center, cluster and VM level); the list is then
    # one more query on plain id lists, however many VMs there are.
    with django_assert_num_queries(2) as captured:
        assert set(
            restrict(user, VirtualMachine.objects.all()).values_list("name", flat=True)
        ) == names(world, "a1", "b1", "x1")
    grants_sql, list_sql = (q["sql"] for q in captured.captured_queries)
    assert "guardian_userobjectpermission" in grants_sql
    assert "guardian" not in list_sql
    user._vireo_grants = {}  # what PermissionCacheMiddleware gives a request
    restrict(user, VirtualMachine.objects.all()).count()
    with django_assert_num_queries(1):  # the grants are read once per request
        restrict(user, VirtualMachine.objects.all()).count()


def test_user_roles_are_not_admin(world):
    user = UserFactory()
    grant(user, "UserVmEngine", world["a1"])
    assert not is_admin(user)
    assert can(user, "remove", world["a1"])
    assert not can(user, "remove", world["a2"])
    assert can_subscribe(user, f"vm.{world['a1'].pk}")
    assert not can_subscribe(user, f"vm.{world['a2'].pk}")


def test_permissions_tab_rows_say_where_from(world):
    user, other = UserFactory(), UserFactory()
    grant(user, "DataCenterAdmin", world["dc1"])
    grant(other, "UserRole", world["a1"])
    rows = object_permissions(world["a1"])
    by_user = {(str(r.principal), r.role.name): r for r in rows}
    inherited = by_user[(str(user), "DataCenterAdmin")]
    assert inherited.inherited and inherited.source == world["dc1"]
    own = by_user[(str(other), "UserRole")]
    assert not own.inherited and own.source == world["a1"]


def test_add_and_remove_permission_checks_the_granter(world):
    engine, target = UserFactory(), UserFactory()
    grant(engine, "UserVmEngine", world["a1"])
    roles = {r.name for r in assignable_roles(engine, world["a1"])}
    assert "UserRole" in roles and "SuperUser" not in roles and "ClusterAdmin" not in roles
    permission_add(
        user=engine, principal=target, role=Role.objects.get(name="UserRole"), obj=world["a1"]
    )
    assert visible(target) == names(world, "a1")
    with pytest.raises(ActionRefused):
        permission_add(
            user=engine, principal=target, role=Role.objects.get(name="UserRole"), obj=world["a1"]
        )
    with pytest.raises(ActionRefused):
        permission_add(
            user=engine, principal=target, role=Role.objects.get(name="UserRole"), obj=world["a2"]
        )
    with pytest.raises(ActionRefused):
        permission_add(
            user=engine, principal=target, role=Role.objects.get(name="SuperUser"), obj=world["a1"]
        )
    row = next(r for r in object_permissions(world["a1"]) if r.principal == target)
    permission_remove(user=engine, kind="user", row_id=row.id, obj=world["a1"])
    assert visible(target) == set()


def test_creator_holds_user_vm_engine(world):
    user = UserFactory()
    permission_grant_creator(user=user, vm=world["a2"])
    assert can(user, "edit_vm", world["a2"]) and not is_admin(user)


def test_disk_visibility_follows_vm(world):
    from storage.models import Disk

    user = UserFactory()
    disk = DiskFactory(vm=world["a1"])
    DiskFactory(vm=world["a2"])
    grant(user, "UserRole", world["a1"])
    assert list(restrict(user, Disk.objects.all())) == [disk]


def test_vm_edit_window_needs_edit_vm_and_sizing_only_while_down(world, client):
    from django.urls import reverse

    from vms.choices import VMStatus

    user_role, engine = UserFactory(), UserFactory()
    vm = world["a1"]
    VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.UP)
    grant(user_role, "UserRole", vm)
    grant(engine, "UserVmEngine", vm)
    url = reverse("vms:edit", args=[vm.pk])
    client.force_login(user_role)
    assert client.get(url).status_code == 404
    client.force_login(engine)
    window = client.get(url).content.decode()
    assert "Single Sign-On" in window
    # While the VM runs its sizing is shown read-only, not offered and then refused: a posted
    # change is ignored and the rest is saved.
    assert html_one(window, "input[name=memory_mb]").get("disabled") is not None
    memory = vm.memory_mb
    form = {"description": "d", "memory_mb": memory * 2, "vcpus": vm.vcpus, "sso_enabled": ""}
    client.post(url, form, headers={"HX-Request": "true"})
    vm.refresh_from_db()
    assert not vm.sso_enabled and vm.description == "d" and vm.memory_mb == memory
