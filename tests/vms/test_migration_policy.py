"""Migration policies, inherited (issue 11 item 5): engine-config < cluster (Edit Cluster's
Migration Policy tab) < VM (Edit VM's Host tab), resolved by vms/migration_policy.py; the
Migrate job's libvirt options from the effective values (compression dropped where the
source's libvirt lacks it); Pass-Through Host CPU keeps a VM from migrating; the windows
refuse bad input changing nothing; the General sub-tab shows each value and its source."""

import xml.etree.ElementTree as ET

import libvirt
import pytest
from django.urls import reverse
from factories import ClusterFactory, HostFactory
from helpers import HX, assert_messages, html_find, html_one, html_text

import hypervisor
from hypervisor.domainxml import domain_xml, net_link_speed
from portal.kernel.config import config_set
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Phase
from vms import services
from vms.choices import MigrationMode, VMStatus
from vms.jobs import vm_domain_spec
from vms.migration import migration_options, vm_migrate
from vms.migration_policy import GLOBAL, effective_migration_settings
from vms.models import Cluster, Host, VirtualMachine
from vms.scheduling import NoHostAvailable, Purpose, schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(sync_hosts):
    cluster = ClusterFactory(name="prod")
    made = [HostFactory(cluster=cluster, name=f"h{n}", memory_mb=8192, cpus=4) for n in (1, 2)]
    sync_hosts(*made)
    return made


@pytest.fixture
def running(make_vm, hosts):
    return make_vm(status=VMStatus.UP, disks=0, host=hosts[0], name="web1", memory_mb=512)


def values(vm) -> dict:
    vm = VirtualMachine.objects.select_related("cluster").get(pk=vm.pk)
    return effective_migration_settings(vm)


def test_each_setting_comes_from_the_lowest_level_that_sets_it(running):
    config_set("MigrationPolicy", "legacy")
    config_set("DefaultMaximumMigrationDowntime", 700)
    got = values(running)
    assert got["policy"] == ("legacy", GLOBAL)
    assert got["downtime"] == (700, GLOBAL)
    assert got["auto_converge"] == (False, GLOBAL)
    assert got["compression"] == ("none", GLOBAL)
    assert got["bandwidth"] == ("auto", GLOBAL)

    Cluster.objects.filter(pk=running.cluster_id).update(
        migration_policy="post_copy",
        auto_converge=True,
        migration_bandwidth="custom",
        migration_bandwidth_mbps=250,
    )
    got = values(running)
    assert got["policy"] == ("post_copy", "cluster prod")
    assert got["auto_converge"] == (True, "cluster prod")
    assert got["bandwidth_mbps"] == (250, "cluster prod")
    assert got["compression"] == ("none", GLOBAL)

    VirtualMachine.objects.filter(pk=running.pk).update(
        migration_policy="suspend_workload",
        auto_converge=False,
        migration_compression="xbzrle",
        custom_migration_downtime=90,
    )
    got = values(running)
    assert got["policy"] == ("suspend_workload", "VM")
    assert got["auto_converge"] == (False, "VM")  # False overrides: only None inherits
    assert got["compression"] == ("xbzrle", "VM")
    assert got["downtime"] == (90, "VM")
    assert got["bandwidth_mbps"] == (250, "cluster prod")


def test_custom_bandwidth_without_a_figure_takes_engine_configs(running):
    config_set("MigrationBandwidthCustomMbps", 77)
    VirtualMachine.objects.filter(pk=running.pk).update(migration_bandwidth="custom")
    assert values(running)["bandwidth_mbps"] == (77, "VM")


def test_migration_options_follow_the_effective_values(running, hosts):
    config_set("DefaultMaximumMigrationDowntime", 800)
    VirtualMachine.objects.filter(pk=running.pk).update(migration_policy="legacy")
    running = VirtualMachine.objects.get(pk=running.pk)
    options = migration_options(running, hosts[1])
    assert (options.downtime_steps, options.post_copy_after, options.pause_after) == (
        (800,),
        None,
        None,
    )
    Cluster.objects.filter(pk=running.cluster_id).update(
        migration_policy="post_copy",
        migration_compression="mt",
        migration_bandwidth="custom",
        migration_bandwidth_mbps=300,
    )
    VirtualMachine.objects.filter(pk=running.pk).update(
        migration_policy="", custom_migration_downtime=400, auto_converge=True
    )
    running = VirtualMachine.objects.get(pk=running.pk)
    options = migration_options(running, hosts[1])
    assert options.downtime_steps == (50, 100, 200, 400)  # the Minimal downtime ladder
    assert options.post_copy_after is not None and options.pause_after is None
    assert (options.compression, options.bandwidth_mbps, options.auto_converge) == (
        ("mt",),
        300,
        True,
    )


def test_auto_bandwidth_is_the_slower_link_shared_by_the_concurrent_migrations(running, hosts):
    h1, h2 = hosts
    Cluster.objects.filter(pk=running.cluster_id).update(migration_bandwidth="auto")
    running = VirtualMachine.objects.select_related("host__cluster").get(pk=running.pk)
    assert migration_options(running, h2).bandwidth_mbps is None  # link speeds not known
    Host.objects.filter(pk=h1.pk).update(link_speed_mbps=10_000)
    Host.objects.filter(pk=h2.pk).update(link_speed_mbps=1_000)
    config_set("MaxNumberOfConcurrentMigrations", 4)
    running = VirtualMachine.objects.select_related("host__cluster").get(pk=running.pk)
    h2.refresh_from_db()
    assert migration_options(running, h2).bandwidth_mbps == 250  # 1,000 Mbps / 4
    Cluster.objects.filter(pk=running.cluster_id).update(max_concurrent_migrations=2)
    running = VirtualMachine.objects.select_related("host__cluster").get(pk=running.pk)
    assert migration_options(running, h2).bandwidth_mbps == 500  # the cluster's limit


def test_a_link_speed_counts_only_when_the_link_is_up_and_its_speed_known():
    up = "<device><capability type='net'><link speed='{}' state='{}'/></capability></device>"
    assert net_link_speed(up.format(10000, "up")) == 10000
    assert net_link_speed(up.format(1000, "down")) == 0
    assert net_link_speed(up.format(2**32 - 1, "up")) == 0  # the kernel's "unknown"
    assert net_link_speed("<device><capability type='net'/></device>") == 0
    assert net_link_speed(up.format("fast", "up")) == 0


def test_compression_is_dropped_where_the_hosts_libvirt_lacks_it(
    running, hosts, admin, work, monkeypatch
):
    VirtualMachine.objects.filter(pk=running.pk).update(migration_compression="xbzrle")
    monkeypatch.delattr(libvirt, "VIR_MIGRATE_PARAM_COMPRESSION")
    used = []
    real = hypervisor.Connection.migrate

    def migrate(self, uuid, dest, options, **kwargs):
        used.append(options.compression)
        return real(self, uuid, dest, options, **kwargs)

    monkeypatch.setattr(hypervisor.Connection, "migrate", migrate)
    work(lambda: vm_migrate(vm_id=running.pk, user=admin, host_id=hosts[1].pk))
    assert used == [()]
    done = Event.objects.get(vm=running, action="migrate", phase=Phase.SUCCEEDED)
    assert "without compression: the libvirt of host h1 does not support it" in done.message
    running.refresh_from_db()
    assert running.host == hosts[1]


def test_cpu_passthrough_refuses_migration_and_reaches_the_domain_xml(running, hosts, admin):
    VirtualMachine.objects.filter(pk=running.pk).update(
        cpu_passthrough=True, migration_mode=MigrationMode.PINNED
    )
    running = VirtualMachine.objects.get(pk=running.pk)
    running.migration_mode = MigrationMode.MIGRATABLE  # the filter of its own, not the mode's
    with pytest.raises(NoHostAvailable) as refused:
        schedule(running, purpose=Purpose.MIGRATE, exclude=[running.host_id])
    assert refused.value.reasons == {"h2": "the VM passes the host CPU through"}
    with pytest.raises(ActionRefused, match="it passes the host CPU through"):
        vm_migrate(vm_id=running.pk, user=admin, host_id=hosts[1].pk)
    running.refresh_from_db()
    assert (running.status, running.host, running.migrating_to) == (VMStatus.UP, hosts[0], None)
    xml = ET.fromstring(domain_xml(vm_domain_spec(running), domain_type="kvm", disks=[]))
    assert xml.find("cpu").get("mode") == "host-passthrough"


def edit(vm, **migration):
    return services.vm_edit(
        vm_id=vm.pk,
        user=None,
        description=vm.description,
        sso_enabled=vm.sso_enabled,
        migration=migration,
    )


@pytest.mark.parametrize(
    "migration,words",
    [
        ({"migration_policy": "fastest"}, "Choose a Migration Policy from the list."),
        ({"migration_compression": "zip"}, "Choose a Migration compression from the list."),
        ({"custom_migration_downtime": 0}, "between 1 and 60000 ms"),
        ({"custom_migration_downtime": 60001}, "between 1 and 60000 ms"),
        (
            {"migration_bandwidth": "custom", "migration_bandwidth_mbps": 0},
            "between 1 and 100000 Mbps",
        ),
        ({"migration_mode": "anywhere"}, "Choose a Migration mode from the list."),
        ({"cpu_passthrough": True}, 'set Migration mode to "Do not allow migration"'),
    ],
)
def test_vm_edit_refuses_bad_migration_settings_changing_nothing(make_vm, migration, words):
    vm = make_vm(VMStatus.DOWN)
    before = VirtualMachine.objects.values().get(pk=vm.pk)
    with pytest.raises(ActionRefused, match=words):
        edit(vm, **migration)
    assert VirtualMachine.objects.values().get(pk=vm.pk) == before


def test_pass_through_changes_only_while_down(make_vm):
    vm = make_vm(VMStatus.UP)
    with pytest.raises(ActionRefused, match="only while it is Down"):
        edit(vm, cpu_passthrough=True, migration_mode=MigrationMode.PINNED)
    edit(vm, migration_mode=MigrationMode.USER_MIGRATABLE, custom_migration_downtime=250)
    vm.refresh_from_db()
    assert (vm.migration_mode, vm.custom_migration_downtime, vm.cpu_passthrough) == (
        MigrationMode.USER_MIGRATABLE,
        250,
        False,
    )


def test_the_edit_vm_window_saves_the_host_tab(admin_client, make_vm):
    vm = make_vm(VMStatus.DOWN)
    url = reverse("vms:edit", args=[vm.pk])
    window = admin_client.get(url, headers=HX)
    panels = html_find(window, "fieldset.side-tab-panel")
    host = [f for f in panels if html_text(f.find("legend")) == "Host"][0]
    names = [e.get("name") for e in host.cssselect("select, input")]
    assert names[:3] == ["start_host", "migration_mode", "migration_policy"]
    assert "custom_migration_downtime" in names
    option = html_find(window, "select[name=migration_policy] option")[0]
    assert html_text(option) == "Inherit from cluster setting"
    form = {
        "description": "",
        "memory_mb": vm.memory_mb,
        "vcpus": vm.vcpus,
        "cores_per_socket": 1,
        "migration_mode": MigrationMode.PINNED,
        "cpu_passthrough": "on",
        "migration_policy": "minimal_downtime",
        "auto_converge": "true",
        "migration_compression": "",
        "migration_bandwidth": "custom",
        "migration_bandwidth_mbps": "120",
        "custom_migration_downtime": "300",
    }
    response = admin_client.post(url, form, headers=HX)
    assert_messages(response, "success", f"VM {vm.name} saved.")
    vm.refresh_from_db()
    assert (
        vm.migration_mode,
        vm.cpu_passthrough,
        vm.migration_policy,
        vm.auto_converge,
        vm.migration_compression,
        vm.migration_bandwidth_mbps,
        vm.custom_migration_downtime,
    ) == (MigrationMode.PINNED, True, "minimal_downtime", True, "", 120, 300)
    before = VirtualMachine.objects.values().get(pk=vm.pk)
    response = admin_client.post(
        url, {**form, "custom_migration_downtime": "70000", "migration_policy": "x"}, headers=HX
    )
    page = response.content.decode()
    assert "Migration downtime must be between 1 and 60,000 ms." in page
    assert VirtualMachine.objects.values().get(pk=vm.pk) == before


def test_the_edit_cluster_window_has_a_migration_policy_tab(admin_client):
    cluster = ClusterFactory(name="prod")
    url = reverse("vms:cluster_edit", args=[cluster.pk])
    window = admin_client.get(url, headers=HX)
    assert [html_text(t) for t in html_find(window, "label.side-tab")] == [
        "General",
        "Migration Policy",
        "Scheduling Policy",
    ]
    option = html_find(window, "select[name=migration_compression] option")[0]
    assert html_text(option) == "Inherit from global setting"
    form = {"name": "prod", "shutdown_timeout": 120, "migration_policy": "suspend_workload"}
    form |= {"auto_converge": "false", "migration_compression": "xbzrle"}
    form |= {"migration_bandwidth": "hypervisor_default", "migration_bandwidth_mbps": ""}
    assert_messages(admin_client.post(url, form, headers=HX), "success", "Cluster prod saved.")
    cluster.refresh_from_db()
    assert (
        cluster.migration_policy,
        cluster.auto_converge,
        cluster.migration_compression,
        cluster.migration_bandwidth,
    ) == ("suspend_workload", False, "xbzrle", "hypervisor_default")
    before = Cluster.objects.values().get(pk=cluster.pk)
    for bad in (
        {"migration_policy": "fastest"},
        {"migration_bandwidth": "custom", "migration_bandwidth_mbps": "100001"},
    ):
        response = admin_client.post(url, {**form, **bad}, headers=HX)
        assert response.status_code == 200 and "saved" not in response.content.decode()
        assert Cluster.objects.values().get(pk=cluster.pk) == before
    with pytest.raises(ActionRefused, match="needs a value in Mbps"):
        services.cluster_update(
            cluster_id=cluster.pk,
            user=None,
            shutdown_reason_enabled=False,
            shutdown_timeout=120,
            migration={"migration_bandwidth": "custom", "migration_bandwidth_mbps": None},
        )
    assert Cluster.objects.values().get(pk=cluster.pk) == before


def test_the_general_sub_tab_shows_values_and_where_they_came_from(admin_client, running):
    Cluster.objects.filter(pk=running.cluster_id).update(migration_policy="minimal_downtime")
    VirtualMachine.objects.filter(pk=running.pk).update(custom_migration_downtime=250)
    config_set("MigrationCompression", "xbzrle")
    page = admin_client.get(reverse("vms:details", args=[running.pk, "general"]), headers=HX)
    block = html_one(page, "dl.migration-props")
    rows = dict(
        zip(
            [html_text(d) for d in block.cssselect("dt")],
            [html_text(d) for d in block.cssselect("dd")],
            strict=True,
        )
    )
    assert rows["Migration Policy"] == "Minimal downtime (cluster prod)"
    assert rows["Maximum downtime"] == "250 ms (VM)"
    assert rows["Migration compression"] == "XBZRLE (global)"
    assert rows["Migration mode"] == "Allow manual and automatic migration"


def test_a_clone_keeps_the_migration_settings_of_its_source(make_vm, admin, work):
    vm = make_vm(VMStatus.DOWN)
    VirtualMachine.objects.filter(pk=vm.pk).update(
        migration_mode=MigrationMode.PINNED,
        cpu_passthrough=True,
        migration_policy="legacy",
        custom_migration_downtime=120,
    )
    clone = work(lambda: services.vm_clone(vm_id=vm.pk, user=admin, clone_name="copy"))
    clone.refresh_from_db()
    assert (
        clone.migration_mode,
        clone.cpu_passthrough,
        clone.migration_policy,
        clone.custom_migration_downtime,
    ) == (MigrationMode.PINNED, True, "legacy", 120)
