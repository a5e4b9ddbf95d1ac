"""The standard test-driver node of the hypervisor tests: its uuids, sizes and domains."""

from pathlib import Path

from helpers import GiB

from hypervisor import DiskSpec, DomainSpec, DomainState
from hypervisor.testnode import TestDomain, TestPool, TestVolume, render_node_xml

RUNNING_UUID = "00000000-0000-4000-8000-000000000001"
PAUSED_UUID = "00000000-0000-4000-8000-000000000002"
SAVED_UUID = "00000000-0000-4000-8000-000000000003"
OFF_UUID = "00000000-0000-4000-8000-000000000004"


def spec(uuid: str, name: str, disks: tuple[DiskSpec, ...] = ()) -> DomainSpec:
    """A 512 MiB, 1 vCPU domain spec."""
    return DomainSpec(uuid=uuid, name=name, memory_mb=512, vcpus=1, disks=disks)


def write_standard_node(directory: Path) -> str:
    """Write the standard node into `directory`; its URI.

    Pool "data" (web.qcow2 10 GiB/1 GiB used, base.raw 2 GiB raw); domains web (running),
    db (paused), batch (shut off with a managed save), spare (shut off).
    """
    pool = TestPool(
        name="data",
        path=str(directory / "data"),
        capacity=100 * GiB,
        volumes=(
            TestVolume("web.qcow2", 10 * GiB, 1 * GiB),
            TestVolume("base.raw", 2 * GiB, 2 * GiB, format="raw"),
        ),
    )
    domains = [
        TestDomain(
            spec(RUNNING_UUID, "web", (DiskSpec("data", "web.qcow2"),)), DomainState.RUNNING
        ),
        TestDomain(spec(PAUSED_UUID, "db"), DomainState.PAUSED),
        TestDomain(spec(SAVED_UUID, "batch"), DomainState.SHUTOFF, has_managed_save=True),
        TestDomain(spec(OFF_UUID, "spare"), DomainState.SHUTOFF),
    ]
    xml = render_node_xml(hostname="node1", cpus=8, memory_mb=16384, pools=[pool], domains=domains)
    path = directory / "node.xml"
    path.write_text(xml)
    return f"test://{path}"
