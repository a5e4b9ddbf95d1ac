"""Issue 9's whole path in a browser, on this machine's real libvirtd with qemu: starting from an
empty database (no demo), a new SuperUser creates a data center and a cluster, adds the host
`qemu:///system`, creates a Local on Host data domain in a directory made for it, a NAT
logical network, a VM with a disk and a NIC on that network's vNIC profile, runs it until it
is Up, then defines a second domain with virsh and sees `external-<name>` appear live.

The host is the integration suite's private libvirtd (tests/integration/libvirtd.py), which
listens only at /run/vireo-it/run/libvirt-sock, while the New Host window rightly refuses a
`?socket=` parameter. So, for the test's duration only, the standard socket path
/run/libvirt/libvirt-sock is made a symlink to the private socket (only when nothing is there;
removed afterwards): the user types exactly `qemu:///system` and Vireo, its jobs and the monitor
reach the real daemon through libvirt's ordinary client, with no setting or code path of the
portal bent for the test.

The real daemon is shared with other runs, so everything here has a name of its own, the
network's id (and so its libvirt name vireo-<id>) is moved out of the way of other runs, and
everything Vireo or the test made on the host (domains, the pool, the network) is removed
afterwards, pass or fail, once the monitor has stopped (it would set the pool up again).
"""

import os
import random
import re
import shutil
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
from django.db import connection
from integration.isos import bootable_iso
from integration.libvirtd import SOCKET, URI, ensure_libvirtd
from playwright.sync_api import expect
from test_console_browser import LIT_PIXELS, PASSWORD, expect_drawn, log_in

import hypervisor
from portal.kernel.models import Job
from storage.choices import StorageDomainStatus
from storage.models import StorageDomain
from vms import domains
from vms.models import Network
from vms.monitor import Monitor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

STANDARD_SOCKET = Path("/run/libvirt/libvirt-sock")
RESULTS_DIR = Path(__file__).resolve().parents[2] / "test-results"
SLOW = 90_000  # ms: a real pool build, network start or qemu start on a loaded machine


@pytest.fixture
def real_host():
    """The private libvirtd reachable as plain qemu:///system, for this test only."""
    if os.geteuid() != 0:
        pytest.skip("the real-host path needs root (a private libvirtd and /run/libvirt)")
    ensure_libvirtd()
    made = False
    if STANDARD_SOCKET.is_symlink() and os.readlink(STANDARD_SOCKET) == str(SOCKET):
        pass  # another run of this test made it: share it, leave it to that run
    elif STANDARD_SOCKET.exists() or STANDARD_SOCKET.is_symlink():
        pytest.skip(f"{STANDARD_SOCKET} is taken (a system libvirtd?): not the private one")
    else:
        STANDARD_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        STANDARD_SOCKET.symlink_to(SOCKET)
        made = True
    try:
        yield URI
    finally:
        if made and STANDARD_SOCKET.is_symlink():
            STANDARD_SOCKET.unlink()


def _remove_from_host(uri: str, domains: list[str], pools: list[str], networks: list[str]):
    conn = libvirt.open(uri)
    try:
        for name in domains:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            )
        for name in pools:
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                continue
            if pool.isActive():
                pool.destroy()
            if pool.isPersistent():
                pool.undefine()
        for name in networks:
            try:
                net = conn.networkLookupByName(name)
            except libvirt.libvirtError:
                continue
            if net.isActive():
                net.destroy()
            if net.isPersistent():
                net.undefine()
    finally:
        conn.close()


@pytest.fixture
def host_cleanup(real_host, transactional_db, tmp_path):
    """Names of the domains the test makes; afterwards (the monitor stopped by then) those
    domains, and the pools and networks of the test's inventory, leave the host."""
    domains: list[str] = []
    yield domains
    pools = list(StorageDomain.objects.values_list("pool_name", flat=True))
    networks = [n.libvirt_name for n in Network.objects.all()]
    _remove_from_host(real_host, domains, pools, networks)
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


@pytest.fixture
def real_monitor(host_cleanup, rq_workers):
    """The production monitor in a thread of this process, polling every second (it finds the
    host once the browser adds it). Stopped before host_cleanup runs."""
    # Network ids (libvirt names vireo-<id>) clear of other runs on the shared libvirtd.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('vms_network', 'id'), %s)",
            [random.randrange(10**6, 10**9)],
        )
    mon = Monitor(poll_seconds=1.0, stale_seconds=300)

    def run():
        try:
            mon.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="vireo-monitor", daemon=True)
    thread.start()
    yield mon
    deadline = time.monotonic() + 30
    while Job.objects.filter(status__in=Job.ACTIVE).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    mon.stop.set()
    thread.join(timeout=15)
    mon.pool.shutdown(wait=True)
    hypervisor.disconnect_all()


def _tab(page, name: str):
    page.locator("nav.main-tabs").get_by_role("link", name=name, exact=True).click()
    expect(page.locator("#live-dot")).to_have_class(re.compile(r"\bon\b"))


def test_new_user_sets_up_a_real_host_and_runs_a_vm(
    real_host, host_cleanup, real_monitor, admin_page, console_errors, tmp_path
):
    page = admin_page
    window = page.locator("#modal")
    messages = page.locator("#messages")
    tag = uuid.uuid4().hex[:6]
    vm_name, foreign = f"e2e-{tag}", f"e2e-foreign-{tag}"
    host_cleanup += [vm_name, foreign]

    # 1. A data center and a cluster.
    _tab(page, "Data Centers")
    page.locator("#datacenter-toolbar").get_by_role("button", name="New").click()
    expect(window.locator("h2")).to_have_text("New Data Center")
    window.get_by_label("Name").fill("Lab")
    window.get_by_role("button", name="OK").click()
    expect(messages).to_contain_text("Data center Lab created.")
    _tab(page, "Clusters")
    page.locator("#cluster-toolbar").get_by_role("button", name="New").click()
    expect(window.locator("h2")).to_have_text("New Cluster")
    window.get_by_label("Data Center").select_option(label="Lab")
    window.get_by_label("Name").fill("lab-cluster")
    window.get_by_role("button", name="OK").click()
    expect(messages).to_contain_text("Cluster lab-cluster created.")

    # 2. This machine's libvirtd, as qemu:///system.
    _tab(page, "Hosts")
    page.locator(".toolbar").get_by_role("button", name="New").click()
    expect(window.locator("h2")).to_have_text("New Host")
    window.get_by_label("Name").fill("this-host")
    window.get_by_label("Address").fill("qemu:///system")
    window.get_by_label("Cluster").select_option(label="lab-cluster")
    window.get_by_role("button", name="OK").click()
    expect(messages).to_contain_text("Host this-host added; connecting.")
    host_row = page.locator("#host-results tbody tr", has_text="this-host")
    expect(host_row.locator(".status-badge")).to_have_text("Up", timeout=SLOW)
    expect(host_row.locator(".qemu-version")).not_to_have_text("—")

    # 3. A Local on Host data domain in a directory the admin made for it.
    data_dir = tmp_path / "data" / "local-data"
    data_dir.mkdir(parents=True)
    _tab(page, "Storage")
    page.locator("#domain-toolbar").get_by_role("button", name="New Domain").click()
    expect(window.locator("h2")).to_have_text("New Domain")
    window.get_by_label("Name", exact=True).fill("local-data")
    window.get_by_label("Data Center").select_option(label="Lab")
    window.get_by_label("Domain Function").select_option("data")
    window.get_by_label("Storage Type").select_option("local")
    window.get_by_label("Path", exact=True).fill(str(data_dir))
    window.get_by_role("button", name="OK").click()
    expect(messages).to_contain_text("Adding storage domain local-data.")
    domain_row = page.locator("#domain-results tr.domain-row", has_text="local-data")
    expect(domain_row).to_contain_text("Active", timeout=SLOW)

    # 4. A logical network (NAT, on a subnet of its own).
    subnet = f"10.{random.randrange(64, 250)}.{random.randrange(0, 250)}.1/24"
    _tab(page, "Data Centers")
    page.locator(".dc-block", has_text="Lab").get_by_role("link", name="Networks").click()
    page.locator(".toolbar").get_by_role("button", name="New").click()
    expect(window.locator("h2")).to_contain_text("New Logical Network")
    window.get_by_label("Name", exact=True).fill("vmnet")
    window.get_by_label("Type").select_option("nat")
    window.get_by_label("IPv4 address").fill(subnet)
    window.get_by_role("button", name="OK").click()
    network_row = page.locator("#network-results tbody tr", has_text="vmnet")
    expect(network_row).to_contain_text("Operational", timeout=SLOW)

    # 5. A VM with a disk on the new domain and a NIC on the network's profile.
    _tab(page, "Virtual Machines")
    page.locator("#vm-toolbar").get_by_role("button", name="New VM").click()
    expect(window.locator("h2")).to_have_text("New Virtual Machine")
    window.get_by_label("Name", exact=True).fill(vm_name)
    window.get_by_label("Cluster").select_option(label="lab-cluster")
    window.get_by_label("Memory Size (MB)").fill("96")
    window.get_by_label("Total Virtual CPUs").fill("1")
    window.get_by_label("Disk Size (GiB)").fill("1")
    window.get_by_label("Storage Domain").select_option(label="local-data")
    window.get_by_label("vNIC Profile (nic1)").select_option(label="vmnet/vmnet (Lab)")
    window.get_by_role("button", name="OK").click()
    expect(window).to_be_hidden()
    vm_row = page.locator("#vm-table tr.vm-row", has_text=vm_name)
    expect(vm_row.locator(".status-badge")).to_have_text("Down", timeout=SLOW)

    # 6. Run it.
    vm_row.locator("td.status").click()
    expect(vm_row).to_have_class(re.compile(r"\bselected\b"))
    page.locator("#vm-toolbar button[data-action=run]").click()
    expect(messages).to_contain_text(f"Run: {vm_name} requested.")
    expect(vm_row.locator(".status-badge")).to_have_text("Up", timeout=SLOW)
    page.locator("#vm-details nav.sub-tabs").get_by_text("Network Interfaces").click()
    expect(page.locator("#vm-details")).to_contain_text("nic1")

    # What the page says is what qemu runs: the domain, its disk in the directory, its NIC.
    network = Network.objects.get(name="vmnet")
    conn = libvirt.open(real_host)
    try:
        dom = conn.lookupByName(vm_name)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        root = ET.fromstring(dom.XMLDesc(0))
    finally:
        conn.close()
    sources = [s.get("file", "") for s in root.findall("devices/disk/source")]
    assert any(src.startswith(f"{data_dir}/") for src in sources), sources
    nets = [s.get("network") for s in root.findall("devices/interface/source")]
    assert nets == [network.libvirt_name], nets

    # 7. A domain defined outside Vireo shows up live as external-<name>.
    xml = tmp_path / "foreign.xml"
    xml.write_text(
        f"<domain type='qemu'><name>{foreign}</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices/></domain>"
    )
    subprocess.run(["virsh", "-c", real_host, "define", str(xml)], check=True, timeout=60)
    foreign_row = page.locator("#vm-table tr.vm-row", has_text=f"external-{foreign}")
    expect(foreign_row.locator(".status-badge")).to_have_text("Down", timeout=SLOW)
    expect(foreign_row.locator(".tag")).to_have_text("external")
    expect(vm_row.locator(".status-badge")).to_have_text("Up")

    RESULTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=RESULTS_DIR / "real-host-end-to-end.png", full_page=True)


def test_new_user_uploads_an_iso_and_runs_a_vm_once_from_it(
    real_host,
    host_cleanup,
    real_monitor,
    browser,
    live_server_url,
    admin_page,
    admin_user,
    console_errors,
    tmp_path,
):
    """Issue 10's install path on the real host (its data center, cluster, a data domain and
    an ISO domain made beforehand): the admin uploads a bootable ISO (iPXE's) in the browser,
    creates a VM, runs it once from the CD and watches it boot in the console; then a UserRole
    user on that VM opens the same console from the User Portal."""
    from factories import ClusterFactory, HostFactory, UserFactory, grant

    from vms.models import VirtualMachine

    page, window, messages = (
        admin_page,
        admin_page.locator("#modal"),
        admin_page.locator("#messages"),
    )
    tag = uuid.uuid4().hex[:6]
    vm_name = f"e2e-iso-{tag}"
    host_cleanup.append(vm_name)
    cluster = ClusterFactory(name=f"iso-{tag}")
    HostFactory(name=f"hv-{tag}", cluster=cluster, uri=real_host, status="up")
    for name, function in (("isos", "iso"), ("data", "data")):
        path = tmp_path / "data" / name
        path.mkdir(parents=True)
        domains.storage_domain_create(
            user=admin_user,
            name=f"{name}-{tag}",
            data_center_id=cluster.data_center_id,
            domain_function=function,
            storage_type="local",
            path=str(path),
        )
    deadline = time.monotonic() + SLOW / 1000
    while StorageDomain.objects.exclude(status=StorageDomainStatus.ACTIVE).exists():
        assert time.monotonic() < deadline, list(StorageDomain.objects.values("name", "status"))
        time.sleep(0.3)
    iso = bootable_iso()

    # 1. Upload the ISO into the ISO domain, with its progress bar.
    _tab(page, "Storage")
    page.locator("#domain-results tr.domain-row", has_text=f"isos-{tag}").click()
    page.locator("#domain-details").get_by_role("link", name="Images").click()
    page.locator("#image-toolbar").get_by_role("button", name="Upload").click()
    expect(window.locator("h2")).to_have_text("Upload Image")
    window.locator("input[type=file]").set_input_files(str(iso))
    window.get_by_role("button", name="Upload").click()
    bar = window.locator("[data-upload-progress]")
    expect(bar).to_contain_text(f"{iso.name} was uploaded.", timeout=SLOW)
    window.get_by_role("button", name="Done").click()
    expect(page.locator("#iso-images tr.image-row", has_text=iso.name)).to_contain_text("OK")

    # 2. A VM with a disk on the data domain.
    _tab(page, "Virtual Machines")
    page.locator("#vm-toolbar").get_by_role("button", name="New VM").click()
    expect(window.locator("h2")).to_have_text("New Virtual Machine")
    window.get_by_label("Name", exact=True).fill(vm_name)
    window.get_by_label("Cluster").select_option(label=cluster.name)
    window.get_by_label("Memory Size (MB)").fill("128")
    window.get_by_label("Total Virtual CPUs").fill("1")
    window.get_by_label("Disk Size (GiB)").fill("1")
    window.get_by_label("Storage Domain").select_option(label=f"data-{tag}")
    window.get_by_role("button", name="OK").click()
    expect(window).to_be_hidden()
    vm_row = page.locator("#vm-table tr.vm-row", has_text=vm_name)
    expect(vm_row.locator(".status-badge")).to_have_text("Down", timeout=SLOW)

    # 3. Run Once from the CD.
    vm_row.locator("td.status").click()
    page.locator("#vm-toolbar button[data-action=run_once]").click()
    expect(window.locator("h2")).to_have_text("Run Virtual Machine(s)")
    window.get_by_label("Attach CD").select_option(label=iso.name)
    window.get_by_label("Boot Sequence").select_option(index=_cd_first(window))
    window.get_by_role("button", name="OK").click()
    expect(messages).to_contain_text(f"Run Once: {vm_name} requested")
    expect(vm_row.locator(".status-badge")).to_have_text("Up", timeout=SLOW)

    # 4. What qemu runs: the uploaded ISO in the CD-ROM drive, booted first; the saved
    # definition keeps no CD (Run Once is for this start only).
    conn = libvirt.open(real_host)
    try:
        dom = conn.lookupByName(vm_name)
        live = ET.fromstring(dom.XMLDesc(0))
        saved = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()
    cd_sources = [s.get("file") for s in live.findall("devices/disk[@device='cdrom']/source")]
    assert cd_sources and cd_sources[0].endswith(iso.name), cd_sources
    assert [b.get("dev") for b in live.findall("os/boot")][0] == "cdrom"
    assert not saved.findall("devices/disk[@device='cdrom']/source")
    RESULTS_DIR.mkdir(exist_ok=True)
    page.screenshot(path=RESULTS_DIR / "run-once-from-uploaded-iso.png", full_page=True)

    # 5. Watch it boot in the console: the CD's iPXE draws its screen.
    with page.context.expect_page() as opened:
        page.locator("#vm-toolbar button[data-action=console]").click()
    console = opened.value
    expect_drawn(console)
    # More than SeaBIOS's banner and "Booting from DVD/CD..." (about 3,100 lit pixels): the
    # CD's own bootloader (ISOLINUX, about 3,800 with its line) drawing as it boots.
    console.wait_for_function(f"({LIT_PIXELS})() > 3450", timeout=SLOW, polling=500)
    console.screenshot(path=RESULTS_DIR / "run-once-console.png")
    console.locator("#console-disconnect").click()
    expect(console.locator("#console-status")).to_have_text("Disconnected.")
    console.close()

    # 6. A UserRole user on the VM opens the same console from the User Portal's card.
    vm = VirtualMachine.objects.get(name=vm_name)
    grant(UserFactory(username=f"user-{tag}", password=PASSWORD), "UserRole", vm)
    user = browser.new_context(base_url=live_server_url, viewport={"width": 1300, "height": 900})
    try:
        portal = user.new_page()
        log_in(portal, f"user-{tag}")
        expect(portal).to_have_url(re.compile(r"/user/$"))
        card = portal.locator(f"#vm-card-{vm.pk}")
        # Up, or Paused: under this machine's nested KVM, iPXE's protected mode stops the
        # guest with an "emulation failure" (qemu pauses it); its screen stays on the console.
        expect(card.locator(".status-badge")).to_have_text(re.compile("Up|Paused"))
        with user.expect_page() as opened:
            card.locator("a[data-card-action=console]").click()
        expect_drawn(opened.value)
        opened.value.screenshot(path=RESULTS_DIR / "run-once-console-user-portal.png")
    finally:
        user.close()


def _cd_first(window) -> int:
    """The index of the first Boot Sequence that starts with the CD-ROM."""
    labels = window.get_by_label("Boot Sequence").locator("option").all_inner_texts()
    return next(i for i, label in enumerate(labels) if label.startswith("CD-ROM"))
