"""Affinity groups (vms/affinity.py) and the scheduler's affinity filters and weights
(vms/scheduling.py): New / Edit / Remove with their refusals and conflicts, hard and soft,
positive and negative, VM to VM and VM to host rules at Run, Migrate and a Maintenance
evacuation, on test-driver hosts; and the broken enforcing groups the balancer corrects."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from factories import ClusterFactory, HostFactory, VMFactory

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event
from vms import inventory, services
from vms.affinity import (
    affinity_group_create,
    affinity_group_remove,
    affinity_group_update,
    enforcing_violation,
)
from vms.choices import HostStatus, VMStatus
from vms.migration import migration_targets, vm_migrate
from vms.models import AffinityGroup, Host, VirtualMachine
from vms.scheduling import FILTERS, WEIGHTS, NoHostAvailable, Purpose, schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(sync_hosts):
    cluster = ClusterFactory(name="prod", max_concurrent_migrations=2)
    made = [HostFactory(cluster=cluster, name=f"h{n}", memory_mb=8192, cpus=4) for n in (1, 2, 3)]
    sync_hosts(*made)
    return made


def group(admin, cluster, name="grp", vms=(), hosts=(), **rules):
    return affinity_group_create(
        user=admin,
        cluster_id=cluster.pk,
        name=name,
        vm_ids=[v.pk for v in vms],
        host_ids=[h.pk for h in hosts],
        **rules,
    )


def up(make_vm, host, name, memory_mb=512):
    return make_vm(status=VMStatus.UP, disks=0, host=host, name=name, memory_mb=memory_mb)


def down(make_vm, host, name):
    return make_vm(status=VMStatus.DOWN, disks=0, host=host, name=name, memory_mb=512)


def host_of(vm) -> Host:
    return VirtualMachine.objects.get(pk=vm.pk).host


# -- New / Edit / Remove ----------------------------------------------------------------------


def test_the_pipeline_names_the_affinity_filters_and_weights():
    names = [f.name for f in FILTERS]
    assert {"vm_affinity", "vm_to_host_affinity"} <= set(names)
    assert [w.name for w in WEIGHTS][-2:] == ["vm_affinity", "vm_to_host_affinity"]


def test_new_edit_remove_with_events(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    a, b = down(make_vm, h1, "a"), down(make_vm, h1, "b")
    made = group(
        admin,
        h1.cluster,
        "db-apart",
        [a, b],
        [h3],
        description="licences",
        vm_rule="negative",
        vm_enforcing=True,
        host_rule="negative",
        host_enforcing=False,
    )
    assert set(made.vms.all()) == {a, b} and list(made.hosts.all()) == [h3]
    assert Event.objects.get(action="affinity_group_create").message == (
        f"{admin.username} created affinity group db-apart in cluster prod (VM Affinity Rule "
        "Negative (Enforcing), VMs: a, b; VM to host rule Negative, hosts: h3)."
    )
    affinity_group_update(
        user=admin,
        group_id=made.pk,
        name="db-together",
        vm_rule="positive",
        vm_enforcing=False,
        vm_ids=[a.pk],
    )
    made.refresh_from_db()
    assert (made.name, made.vm_rule, made.vm_enforcing, made.host_rule) == (
        "db-together",
        "positive",
        False,
        "disabled",
    )
    assert list(made.vms.all()) == [a] and not made.hosts.exists()
    assert "(was db-apart)" in Event.objects.get(action="affinity_group_edit").message
    assert affinity_group_remove(user=admin, group_id=made.pk) == "db-together"
    assert not AffinityGroup.objects.exists()
    assert Event.objects.get(action="affinity_group_remove").message == (
        f"{admin.username} removed affinity group db-together from cluster prod."
    )
    with pytest.raises(ActionRefused, match="does not exist any more"):
        affinity_group_remove(user=admin, group_id=made.pk)
    with pytest.raises(ActionRefused, match="does not exist any more"):
        affinity_group_update(user=admin, group_id=made.pk, name="x")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "Name is required."),
        ("x" * 51, "Name is too long: 51 characters, at most 50."),
        ("two words", "Name may contain only letters, digits"),
        ("bad\x07", "control character"),
        ("GRP", "Name 'GRP' is already used by another affinity group in cluster prod."),
    ],
)
def test_bad_names_are_refused_and_change_nothing(hosts, admin, name, words):
    group(admin, hosts[0].cluster, "grp")
    with pytest.raises(ActionRefused, match=words.replace("(", r"\(").replace(")", r"\)")):
        group(admin, hosts[0].cluster, name)
    assert AffinityGroup.objects.count() == 1


def test_vms_and_hosts_of_another_cluster_are_refused(hosts, make_vm, admin):
    other = HostFactory(name="far", cluster=ClusterFactory(name="test"))
    mine = down(make_vm, hosts[0], "mine")
    theirs = VMFactory(name="theirs", host=other)
    with pytest.raises(ActionRefused) as exc:
        group(admin, hosts[0].cluster, "g", [mine, theirs])
    assert str(exc.value) == (
        "Cannot save affinity group g: an affinity group holds VMs of its own cluster prod "
        "only, not theirs (cluster test)."
    )
    with pytest.raises(ActionRefused, match=r"holds hosts of its own cluster prod only, not far"):
        group(admin, hosts[0].cluster, "g", [mine], [other], host_rule="positive")
    assert not AffinityGroup.objects.exists()
    made = group(admin, hosts[0].cluster, "g", [mine])
    with pytest.raises(ActionRefused, match="not theirs"):
        affinity_group_update(user=admin, group_id=made.pk, name="g", vm_ids=[theirs.pk])
    assert list(made.vms.all()) == [mine]
    with pytest.raises(ActionRefused, match="needs at least one host"):
        group(admin, hosts[0].cluster, "h", [mine], host_rule="positive")
    with pytest.raises(ActionRefused, match="must be Positive, Negative or Disabled"):
        group(admin, hosts[0].cluster, "h", [mine], vm_rule="sideways")


def test_a_positive_and_a_negative_rule_over_the_same_pair_conflict(hosts, make_vm, admin):
    a, b, c = (down(make_vm, hosts[0], n) for n in ("a", "b", "c"))
    together = group(admin, hosts[0].cluster, "together", [a, b], vm_rule="positive")
    with pytest.raises(ActionRefused) as exc:
        group(admin, hosts[0].cluster, "apart", [c, b, a], vm_rule="negative", vm_enforcing=False)
    assert str(exc.value) == (
        "Cannot save affinity group apart: its Negative VM Affinity Rule conflicts with "
        "affinity group together (Positive), which also holds VMs a and b. Change one of the "
        "rules or their VMs."
    )
    assert AffinityGroup.objects.count() == 1
    # one shared VM is no pair; a disabled rule conflicts with nothing
    apart = group(admin, hosts[0].cluster, "apart", [b, c], vm_rule="negative")
    group(admin, hosts[0].cluster, "off", [a, b], vm_rule="disabled")
    # nor can an edit make the pair
    with pytest.raises(ActionRefused, match="conflicts with affinity group together"):
        affinity_group_update(
            user=admin,
            group_id=apart.pk,
            name="apart",
            vm_rule="negative",
            vm_ids=[a.pk, b.pk, c.pk],
        )
    with pytest.raises(ActionRefused, match="conflicts with affinity group apart"):
        affinity_group_update(
            user=admin, group_id=together.pk, name="together", vm_ids=[a.pk, b.pk, c.pk]
        )
    assert set(apart.vms.all()) == {b, c} and set(together.vms.all()) == {a, b}


def test_a_host_moved_to_another_cluster_leaves_its_groups(hosts, make_vm, admin):
    h1, _h2, h3 = hosts
    a = down(make_vm, h1, "a")
    made = group(admin, h1.cluster, "g", [a], [h3], host_rule="negative")
    Host.objects.filter(pk=h3.pk).update(status=HostStatus.MAINTENANCE)
    inventory.host_update(
        host_id=h3.pk,
        user=admin,
        name="h3",
        cluster_id=ClusterFactory(data_center=h1.cluster.data_center).pk,
    )
    assert not made.hosts.exists()


# -- the scheduler at Run -----------------------------------------------------------------------


def run_reasons(vm) -> dict[str, str]:
    with pytest.raises(NoHostAvailable) as exc:
        schedule(VirtualMachine.objects.get(pk=vm.pk), purpose=Purpose.RUN)
    return exc.value.reasons


def test_hard_negative_vm_rule_at_run(hosts, make_vm, admin, work):
    h1, h2, h3 = hosts
    a = up(make_vm, h1, "a")
    b = down(make_vm, h1, "b")
    group(admin, h1.cluster, "apart", [a, b], vm_rule="negative")
    Host.objects.filter(pk=h3.pk).update(status=HostStatus.MAINTENANCE)
    work(lambda: services.vm_run(vm_id=b.pk, user=admin))
    b.refresh_from_db()
    assert (b.status, b.host) == (VMStatus.UP, h2)  # its own host h1 runs a
    # with h2 gone too, Run is refused and names the group
    c = down(make_vm, h1, "c")
    affinity_group_update(
        user=admin,
        group_id=AffinityGroup.objects.get().pk,
        name="apart",
        vm_rule="negative",
        vm_ids=[a.pk, b.pk, c.pk],
    )
    with pytest.raises(ActionRefused) as exc:
        services.vm_run(vm_id=c.pk, user=admin)
    assert str(exc.value) == (
        "Cannot run c: on its host h1, affinity group apart (Negative, Enforcing): its VM a "
        "runs there. No other host of cluster prod can run it: h2: affinity group apart "
        "(Negative, Enforcing): its VM b runs there; h3: the host is Maintenance."
    )
    assert VirtualMachine.objects.get(pk=c.pk).status == VMStatus.DOWN


def test_hard_positive_vm_rule_at_run_follows_the_running_members(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    a = up(make_vm, h2, "a")
    b = down(make_vm, h1, "b")
    group(admin, h1.cluster, "together", [a, b])
    services.vm_run(vm_id=b.pk, user=admin)
    assert host_of(b) == h2
    # where h2 cannot take it, no other host will do, and the refusal says where a runs
    c = down(make_vm, h1, "c")
    VirtualMachine.objects.filter(pk=c.pk).update(memory_mb=8000)
    group(admin, h1.cluster, "together2", [a, c])
    assert run_reasons(c) == {
        "h1": "affinity group together2 (Positive, Enforcing): its VMs run elsewhere (a on h2)",
        "h2": "not enough free memory (needs 8000 MB, 7168 MB free)",
        "h3": "affinity group together2 (Positive, Enforcing): its VMs run elsewhere (a on h2)",
    }


def test_a_positive_group_with_no_member_running_goes_anywhere(hosts, make_vm, admin):
    h1, _h2, _h3 = hosts
    a, b = down(make_vm, h1, "a"), down(make_vm, h1, "b")
    group(admin, h1.cluster, "together", [a, b])
    services.vm_run(vm_id=b.pk, user=admin)
    assert host_of(b) == h1  # its own host: no member runs anywhere


def test_soft_vm_rules_weigh_hosts_at_run(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    # h2 is the busiest host, yet the soft positive rule takes b to a there
    a = up(make_vm, h2, "a", memory_mb=4096)
    b = down(make_vm, h1, "b")
    group(admin, h1.cluster, "near", [a, b], vm_enforcing=False)
    services.vm_run(vm_id=b.pk, user=admin)
    assert host_of(b) == h2
    # a soft negative rule sends c off the hosts running a and b, though h3 is not its own
    c = down(make_vm, h2, "c")
    group(admin, h1.cluster, "far", [b, c], vm_rule="negative", vm_enforcing=False)
    services.vm_run(vm_id=c.pk, user=admin)
    assert host_of(c) in (h1, h3)
    # soft: when only h2 is left, it still runs there
    d = down(make_vm, h2, "d")
    group(admin, h1.cluster, "far2", [a, d], vm_rule="negative", vm_enforcing=False)
    Host.objects.filter(pk__in=[h1.pk, h3.pk]).update(status=HostStatus.MAINTENANCE)
    services.vm_run(vm_id=d.pk, user=admin)
    assert host_of(d) == h2


def test_vm_to_host_rules_at_run(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    a = down(make_vm, h1, "a")
    group(
        admin,
        h1.cluster,
        "on-h3",
        [a],
        [h3],
        vm_rule="disabled",
        host_rule="positive",
        host_enforcing=True,
    )
    services.vm_run(vm_id=a.pk, user=admin)
    assert host_of(a) == h3
    b = down(make_vm, h1, "b")
    group(
        admin,
        h1.cluster,
        "off-h1-h2",
        [b],
        [h1, h2],
        vm_rule="disabled",
        host_rule="negative",
        host_enforcing=True,
    )
    Host.objects.filter(pk=h3.pk).update(status=HostStatus.MAINTENANCE)
    assert run_reasons(b) == {
        "h1": "affinity group off-h1-h2 (VM to host Negative, Enforcing): the group keeps its "
        "VMs off this host",
        "h2": "affinity group off-h1-h2 (VM to host Negative, Enforcing): the group keeps its "
        "VMs off this host",
        "h3": "the host is Maintenance",
    }
    # soft: preferred, not required
    Host.objects.filter(pk=h3.pk).update(status=HostStatus.UP)
    c = down(make_vm, h1, "c")
    group(admin, h1.cluster, "rather-h2", [c], [h2], vm_rule="disabled", host_rule="positive")
    services.vm_run(vm_id=c.pk, user=admin)
    assert host_of(c) == h2
    d = down(make_vm, h1, "d")
    group(admin, h1.cluster, "rather-h1", [d], [h1], vm_rule="disabled", host_rule="positive")
    Host.objects.filter(pk__in=[h1.pk]).update(status=HostStatus.MAINTENANCE)
    services.vm_run(vm_id=d.pk, user=admin)
    assert host_of(d) in (h2, h3)


def test_a_disabled_rule_changes_nothing(hosts, make_vm, admin):
    h1, _h2, _h3 = hosts
    a = up(make_vm, h1, "a")
    b = down(make_vm, h1, "b")
    group(admin, h1.cluster, "off", [a, b], vm_rule="disabled")
    services.vm_run(vm_id=b.pk, user=admin)
    assert host_of(b) == h1


def test_start_running_on_a_host_the_group_forbids_is_refused(hosts, make_vm, admin):
    h1, h2, _h3 = hosts
    a = up(make_vm, h2, "a")
    b = down(make_vm, h1, "b")
    VirtualMachine.objects.filter(pk=b.pk).update(start_host=h2)
    group(admin, h1.cluster, "apart", [a, b], vm_rule="negative")
    with pytest.raises(ActionRefused) as exc:
        services.vm_run(vm_id=b.pk, user=admin)
    assert str(exc.value) == (
        "Cannot run b on h2: affinity group apart (Negative, Enforcing): its VM a runs there."
    )


# -- Migrate ------------------------------------------------------------------------------------


def test_hard_negative_rule_at_migrate(hosts, make_vm, admin, work):
    h1, h2, h3 = hosts
    a = up(make_vm, h1, "a", memory_mb=256)  # h1 is the least loaded host
    b = up(make_vm, h2, "b")
    up(make_vm, h3, "c")
    group(admin, h1.cluster, "apart", [a, b], vm_rule="negative")
    b = VirtualMachine.objects.get(pk=b.pk)
    assert migration_targets(b) == [h3]
    with pytest.raises(ActionRefused) as exc:
        vm_migrate(vm_id=b.pk, user=admin, host_id=h1.pk)
    assert str(exc.value) == (
        "Cannot migrate b to h1: affinity group apart (Negative, Enforcing): its VM a runs there."
    )
    assert VirtualMachine.objects.get(pk=b.pk).status == VMStatus.UP
    work(lambda: vm_migrate(vm_id=b.pk, user=admin))
    assert (host_of(b), VirtualMachine.objects.get(pk=b.pk).status) == (h3, VMStatus.UP)


def test_hard_positive_rule_at_migrate_refuses_splitting_the_group(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    a, b = up(make_vm, h1, "a"), up(make_vm, h1, "b")
    group(admin, h1.cluster, "together", [a, b])
    with pytest.raises(ActionRefused) as exc:
        vm_migrate(vm_id=b.pk, user=admin)
    assert "affinity group together (Positive, Enforcing): its VMs run elsewhere (a on h1)" in (
        str(exc.value)
    )
    assert migration_targets(VirtualMachine.objects.get(pk=b.pk)) == []


def test_soft_rules_at_migrate(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    a = up(make_vm, h3, "a", memory_mb=4096)
    b = up(make_vm, h1, "b")
    group(admin, h1.cluster, "near", [a, b], vm_enforcing=False)
    vm_migrate(vm_id=b.pk, user=admin)
    assert VirtualMachine.objects.get(pk=b.pk).migrating_to == h3  # not the emptier h2


# -- Maintenance ----------------------------------------------------------------------------


@pytest.fixture
def step(monitor, django_capture_on_commit_callbacks, work_off):
    def run():
        with django_capture_on_commit_callbacks(execute=True):
            monitor.cycle()
        work_off()

    return run


def test_maintenance_moves_a_positive_group_together(hosts, make_vm, admin, step):
    h1, h2, h3 = hosts
    a, b = up(make_vm, h1, "a"), up(make_vm, h1, "b")
    up(make_vm, h2, "busy", memory_mb=1024)
    group(admin, h1.cluster, "together", [a, b])
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    for _ in range(3):
        step()
    assert host_of(a) == host_of(b) == h3
    assert Host.objects.get(pk=h1.pk).status == HostStatus.MAINTENANCE


def test_maintenance_keeps_a_negative_group_apart(hosts, make_vm, admin, step):
    h1, h2, h3 = hosts
    a, b = up(make_vm, h1, "a", memory_mb=256), up(make_vm, h2, "b")
    up(make_vm, h3, "busy", memory_mb=4096)  # h3 is the fuller host; the group wins
    group(admin, h1.cluster, "apart", [a, b], vm_rule="negative")
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    step()
    step()
    assert host_of(a) == h3
    assert Host.objects.get(pk=h1.pk).status == HostStatus.MAINTENANCE


def test_maintenance_says_which_group_keeps_a_vm_on_the_host(hosts, make_vm, admin, step):
    h1, h2, h3 = hosts
    Host.objects.filter(pk=h3.pk).update(status=HostStatus.MAINTENANCE)
    a, b = up(make_vm, h1, "a"), up(make_vm, h2, "b")
    group(admin, h1.cluster, "apart", [a, b], vm_rule="negative")
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    step()
    host = Host.objects.get(pk=h1.pk)
    assert (host.status, host.maintenance_reason) == (
        HostStatus.PREPARING_FOR_MAINTENANCE,
        "a cannot leave: affinity group apart (Negative, Enforcing): its VM b runs there; "
        "the host is Maintenance",
    )
    assert host_of(a) == h1


# -- the cost stays flat --------------------------------------------------------------------


def test_schedule_reads_the_groups_in_a_constant_number_of_queries(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    vm = down(make_vm, h1, "vm")
    others = [up(make_vm, (h1, h2, h3)[n % 3], f"o{n}", memory_mb=64) for n in range(6)]

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            schedule(VirtualMachine.objects.get(pk=vm.pk), purpose=Purpose.MIGRATE)
        return len(captured) - 1  # the VM's own read

    group(
        admin,
        h1.cluster,
        "g0",
        [vm, others[0]],
        [h1],
        vm_rule="negative",
        vm_enforcing=False,
        host_rule="positive",
    )
    one = count()
    for n in range(1, 6):
        group(
            admin,
            h1.cluster,
            f"g{n}",
            [vm, *others[n:]],
            [h1, h2, h3],
            vm_rule="negative",
            vm_enforcing=False,
            host_rule="positive",
        )
    assert count() == one


# -- broken enforcing groups for the balancer -----------------------------------------------


def test_enforcing_violation_names_one_vm_and_why(hosts, make_vm, admin):
    h1, h2, h3 = hosts
    cluster = h1.cluster
    a, b, c = up(make_vm, h1, "a"), up(make_vm, h2, "b"), up(make_vm, h2, "c")
    soft = group(admin, cluster, "soft", [b, c], vm_rule="negative", vm_enforcing=False)
    assert enforcing_violation(cluster) is None  # a soft group may be broken
    affinity_group_remove(user=admin, group_id=soft.pk)
    apart = group(admin, cluster, "apart", [b, c], vm_rule="negative")
    vm, why = enforcing_violation(cluster)
    assert (vm, why) == (
        c,
        "VMs b, c of affinity group apart (Negative, Enforcing) run on the same host h2",
    )
    affinity_group_remove(user=admin, group_id=apart.pk)
    group(admin, cluster, "together", [a, b, c])
    vm, why = enforcing_violation(cluster)
    assert vm == a
    assert why == (
        "the VMs of affinity group together (Positive, Enforcing) run on several hosts: "
        "h1 (a); h2 (b, c)"
    )
    # a member on its way: judged once it has settled
    VirtualMachine.objects.filter(pk=a.pk).update(status=VMStatus.MIGRATING_FROM, migrating_to=h2)
    assert enforcing_violation(cluster) is None
    VirtualMachine.objects.filter(pk=a.pk).update(status=VMStatus.UP, migrating_to=None, host=h2)
    assert enforcing_violation(cluster) is None
    group(
        admin,
        cluster,
        "on-h3",
        [b],
        [h3],
        vm_rule="disabled",
        host_rule="positive",
        host_enforcing=True,
    )
    assert enforcing_violation(cluster) == (
        b,
        "VM b runs on host h2, which is not one of the hosts of affinity group on-h3 (VM to "
        "host Positive, Enforcing)",
    )
    # a Down member breaks nothing
    VirtualMachine.objects.filter(pk=b.pk).update(status=VMStatus.DOWN)
    assert enforcing_violation(cluster) is None


def test_a_negative_member_placed_meanwhile_is_seen_under_the_lock(
    hosts, make_vm, admin, monkeypatch
):
    """Two Runs of a Negative group's VMs race for the same best host: the second, re-reading
    the group under the host's lock, sees the first Powering Up there and takes the next."""
    from vms import scheduling

    h1, h2, h3 = hosts
    Host.objects.filter(pk=h3.pk).update(status=HostStatus.MAINTENANCE)
    up(make_vm, h2, "load", memory_mb=1024)  # h1 is the best host
    a, b = down(make_vm, h1, "a"), down(make_vm, h1, "b")
    group(admin, h1.cluster, "apart", [a, b], vm_rule="negative")
    locked = []
    real_lock = scheduling.host_status_locked

    def racing_lock(host_id):
        if not locked:  # the other Run starts a on h1 meanwhile
            VirtualMachine.objects.filter(pk=a.pk).update(status=VMStatus.POWERING_UP)
        locked.append(host_id)
        return real_lock(host_id)

    monkeypatch.setattr(scheduling, "host_status_locked", racing_lock)
    assert schedule(VirtualMachine.objects.get(pk=b.pk), purpose=Purpose.RUN) == h2
    assert locked == [h1.pk, h2.pk]


def test_vm_to_host_rules_at_migrate_and_maintenance(hosts, make_vm, admin, step):
    h1, h2, h3 = hosts
    a = up(make_vm, h1, "a")
    b = up(make_vm, h1, "b")
    up(make_vm, h2, "load", memory_mb=2048)  # h3 is the least loaded host
    group(
        admin,
        h1.cluster,
        "on-h2",
        [a],
        [h2],
        vm_rule="disabled",
        host_rule="positive",
        host_enforcing=True,
    )
    group(
        admin,
        h1.cluster,
        "off-h3",
        [b],
        [h3],
        vm_rule="disabled",
        host_rule="negative",
        host_enforcing=True,
    )
    assert migration_targets(VirtualMachine.objects.get(pk=a.pk)) == [h2]
    with pytest.raises(ActionRefused) as exc:
        vm_migrate(vm_id=b.pk, user=admin, host_id=h3.pk)
    assert str(exc.value) == (
        "Cannot migrate b to h3: affinity group off-h3 (VM to host Negative, Enforcing): the "
        "group keeps its VMs off this host."
    )
    inventory.host_maintenance(host_id=h1.pk, user=admin)
    step()
    step()
    assert (host_of(a), host_of(b)) == (h2, h2)
    assert Host.objects.get(pk=h1.pk).status == HostStatus.MAINTENANCE
