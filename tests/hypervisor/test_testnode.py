"""render_node_xml: libvirt's test driver loads what it renders, states and storage included."""

import pytest
from hypervisor_nodes import GiB, spec

import hypervisor
from hypervisor import DiskSpec, DomainState
from hypervisor.testnode import TestDomain, TestPool, TestVolume, render_node_xml

EVERY_STATE = [
    DomainState.NOSTATE,
    DomainState.RUNNING,
    DomainState.BLOCKED,
    DomainState.PAUSED,
    DomainState.SHUTDOWN,
    DomainState.SHUTOFF,
    DomainState.CRASHED,
    DomainState.PMSUSPENDED,
]


def uuid_for(index: int) -> str:
    return f"10000000-0000-4000-8000-{index:012d}"


@pytest.fixture
def open_node(tmp_path):
    """Write a rendered node XML and connect to it; disconnects afterwards."""
    uris = []

    def open_(xml: str):
        path = tmp_path / f"node{len(uris)}.xml"
        path.write_text(xml)
        uris.append(f"test://{path}")
        return hypervisor.connect(uris[-1])

    yield open_
    for uri in uris:
        hypervisor.disconnect(uri)


def test_round_trip(open_node, tmp_path):
    pools = [
        TestPool(
            "fast",
            str(tmp_path / "fast"),
            50 * GiB,
            (
                TestVolume("a.qcow2", 8 * GiB, 3 * GiB),
                TestVolume("b.img", 4 * GiB, 4 * GiB, format="raw"),
            ),
        ),
        TestPool("empty", "/srv/empty", 10 * GiB),
    ]
    domains = [TestDomain(spec(uuid_for(i), f"vm-{s}"), s) for i, s in enumerate(EVERY_STATE)]
    domains.append(TestDomain(spec(uuid_for(99), "hibernated"), DomainState.SHUTOFF, True))
    disks = (DiskSpec("fast", "a.qcow2"), DiskSpec("fast", "b.img", target="vdb"))
    domains.append(TestDomain(spec(uuid_for(100), "two-disks", disks), DomainState.RUNNING))

    conn = open_node(
        render_node_xml(hostname="hv1", cpus=12, memory_mb=32768, pools=pools, domains=domains)
    )

    host = conn.host_info()
    assert (host.cpus, host.memory_mb) == (12, 32768)
    found = {d.name: d for d in conn.list_domains()}
    assert len(found) == len(EVERY_STATE) + 2
    for i, state in enumerate(EVERY_STATE):
        info = found[f"vm-{state}"]
        assert (info.uuid, info.state, info.has_managed_save) == (uuid_for(i), state, False)
        assert (info.memory_mb, info.vcpus, info.persistent) == (512, 1, True)
    assert found["hibernated"].state == DomainState.SHUTOFF
    assert found["hibernated"].has_managed_save
    conn.start(uuid_for(99))
    assert conn.get_domain(uuid_for(99)).has_managed_save is False

    xml = conn._conn.lookupByUUIDString(uuid_for(100)).XMLDesc(0)
    assert f"<source file='{tmp_path}/fast/a.qcow2'/>" in xml
    assert f"<source file='{tmp_path}/fast/b.img'/>" in xml
    assert "<driver name='qemu' type='raw'/>" in xml

    by_name = {p.name: p for p in conn.list_pools()}
    assert set(by_name) == {"fast", "empty"}
    assert (by_name["fast"].path, by_name["fast"].type) == (str(tmp_path / "fast"), "dir")
    assert by_name["fast"].allocation == 7 * GiB
    assert by_name["empty"].allocation == 0
    volumes = {v.name: v for v in conn.list_volumes("fast")}
    assert (volumes["a.qcow2"].capacity, volumes["a.qcow2"].allocation) == (8 * GiB, 3 * GiB)
    assert volumes["b.img"].format == "raw"
    assert volumes["b.img"].path == f"{tmp_path}/fast/b.img"


def test_pool_uuids_are_stable_across_renders(open_node):
    def render():
        pools = [TestPool("p", "/p", GiB)]
        return render_node_xml(hostname="h", cpus=1, memory_mb=1024, pools=pools, domains=[])

    assert open_node(render()).get_pool("p").uuid == open_node(render()).get_pool("p").uuid


def test_defined_domain_matches_rendered_domain(open_node):
    pool = TestPool("p", "/p", GiB, (TestVolume("v", GiB, 0),))
    rendered = TestDomain(spec(uuid_for(1), "same", (DiskSpec("p", "v"),)), DomainState.SHUTOFF)
    conn = open_node(
        render_node_xml(hostname="h", cpus=1, memory_mb=1024, pools=[pool], domains=[rendered])
    )
    first = conn._conn.lookupByUUIDString(uuid_for(1)).XMLDesc(0)
    conn.undefine_domain(uuid_for(1))
    conn.define_domain(rendered.spec)
    assert conn._conn.lookupByUUIDString(uuid_for(1)).XMLDesc(0) == first


def test_rejects_what_the_test_driver_cannot_load():
    def render(domain):
        return render_node_xml(hostname="h", cpus=1, memory_mb=1024, pools=[], domains=[domain])

    with pytest.raises(ValueError, match="managed save"):
        render(TestDomain(spec(uuid_for(1), "x"), DomainState.RUNNING, has_managed_save=True))
    with pytest.raises(ValueError, match="no volume"):
        render(TestDomain(spec(uuid_for(1), "x", (DiskSpec("p", "v"),)), DomainState.SHUTOFF))
