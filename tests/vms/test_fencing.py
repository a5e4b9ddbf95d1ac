"""Power Management (issue 12 item 1): what Edit Host takes is checked strictly, the fence
agent gets it on stdin (no shell, no password on a command line or in an Event), a real
`fence_ipmilan` against an address where nothing answers fails clearly (the host stays Non
Responsive, its VMs Unknown), and against OpenIPMI's `ipmi_sim` (a real IPMI LAN endpoint) the
monitor fences a Non Responsive host, whose Highly Available VMs then restart elsewhere."""

import socket
import subprocess
import time

import pytest
from django.urls import reverse
from factories import HostFactory
from helpers import HX
from monitor_support import status_of
from test_high_availability import ha_vm

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Phase
from vms import fencing
from vms.choices import HostStatus, VMStatus
from vms.inventory import host_update
from vms.models import HaRestart, Host, VirtualMachine

pytestmark = pytest.mark.django_db

PASSWORD = "s3cret-Pw!"


def pm(**overrides) -> dict:
    values = {"agent": "ipmilan", "address": "10.0.0.5", "user": "admin", "password": PASSWORD}
    values["enabled"] = True
    values["options"] = ""
    values.update(overrides)
    return values


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("address", "", "Address is required"),
        ("address", "10.0.0.5; poweroff", "Address must be an IP address or a host name"),
        ("address", "-oProxyCommand=sh", "Address must be an IP address or a host name"),
        ("address", "bmc\nip=1.2.3.4", "Address must be an IP address or a host name"),
        ("address", "a" * 300, "Address must be an IP address or a host name"),
        ("user", "", "User Name is required"),
        ("user", "ad min", "User Name is required"),
        ("user", "admin\naction=on", "User Name is required"),
        ("password", "", "Password is required"),
        ("password", "pw\naction=on", "Password may not contain control characters"),
        ("password", "x" * 256, "Password is too long"),
        ("options", "ipmitool_path=/tmp/evil", "Unknown Power Management option"),
        ("options", "lanplus=1, lanplus=1", "is given twice"),
        ("options", "ipport=99999", "ipport must be a port"),
        ("options", "privlvl=root", "option privlvl has an invalid value"),
        ("options", "lanplus=yes", "lanplus takes 1 or 0"),
        ("options", "cipher=3\naction=on", "option cipher has an invalid value"),
        ("agent", "apc", "Choose a fence agent Type"),
    ],
)
def test_power_management_is_checked_strictly(field, value, message):
    with pytest.raises(ActionRefused, match=message):
        fencing.power_management_check(
            **{k: v for k, v in pm(**{field: value}).items() if k != "enabled"}
        )


def test_the_agent_gets_its_settings_on_stdin_and_no_shell():
    checked = fencing.power_management_check(
        **{
            k: v
            for k, v in pm(
                address="bmc-1.example.org", options="lanplus, ipport=6230, privlvl=operator"
            ).items()
            if k != "enabled"
        }
    )
    assert fencing.agent_command(checked) == ["/usr/sbin/fence_ipmilan"]
    assert fencing.agent_input(checked, "off").splitlines() == [
        "action=off",
        "ip=bmc-1.example.org",
        "username=admin",
        f"password={PASSWORD}",
        "lanplus=1",
        "ipport=6230",
        "privlvl=operator",
    ]
    with pytest.raises(ValueError):
        fencing.agent_input(checked, "off\nip=elsewhere")


def test_edit_host_power_management_tab(admin_client):
    host = HostFactory(name="node1")
    url = reverse("vms:host_edit", args=[host.pk])
    form = admin_client.get(url, headers=HX).content.decode()
    assert "Power Management" in form and "Enable Power Management" in form
    data = {
        "name": "node1",
        "cluster": host.cluster_id,
        "pm_enabled": "on",
        "pm_agent": "ipmilan",
        "pm_address": "10.0.0.5",
        "pm_user": "admin",
        "pm_password": PASSWORD,
        "pm_options": "lanplus=1",
    }
    admin_client.post(url, data, headers=HX)
    host.refresh_from_db()
    assert (host.pm_enabled, host.pm_address, host.pm_password, host.pm_options) == (
        True,
        "10.0.0.5",
        PASSWORD,
        "lanplus=1",
    )
    page = admin_client.get(url, headers=HX).content.decode()
    assert PASSWORD not in page  # never shown again
    admin_client.post(url, {**data, "pm_password": "", "pm_options": "ipport=624"}, headers=HX)
    host.refresh_from_db()
    assert (host.pm_password, host.pm_options) == (PASSWORD, "ipport=624")  # kept
    refused = admin_client.post(url, {**data, "pm_address": "1.2.3.4 && reboot"}, headers=HX)
    assert "Address must be an IP address or a host name" in refused.content.decode()
    host.refresh_from_db()
    assert host.pm_address == "10.0.0.5"
    assert not Event.objects.filter(message__contains=PASSWORD).exists()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lost_host_with_pm(sync_hosts, **settings) -> tuple[Host, VirtualMachine, Host]:
    """A Non Responsive host with power management, running an HA VM (now Unknown), and
    an Up host of the same cluster."""
    host = HostFactory(name="lost", status=HostStatus.NON_RESPONSIVE)
    vm = ha_vm(host=host, status=VMStatus.UNKNOWN, last_known_status=VMStatus.UP, name="web")
    spare = HostFactory(name="spare", cluster=host.cluster)
    sync_hosts(spare)
    host_update(host_id=host.pk, user=None, name=host.name, power_management=pm(**settings))
    return Host.objects.get(pk=host.pk), vm, spare


def test_fencing_where_nothing_answers_fails_and_changes_nothing(sync_hosts, settings):
    port = free_udp_port()
    host, vm, _spare = lost_host_with_pm(
        sync_hosts,
        address="127.0.0.1",
        options=f"ipport={port}, login_timeout=1, ipmitool_timeout=1",
    )
    settings.VIREO_FENCE_TIMEOUT_SECONDS = 30
    assert fencing.hosts_to_fence() == [host.pk]
    assert fencing.host_fence(host.pk) is False  # a real fence_ipmilan run
    host.refresh_from_db()
    assert host.status == HostStatus.NON_RESPONSIVE
    assert host.fence_tried_at is not None and host.fenced_at is None
    assert status_of(vm) == VMStatus.UNKNOWN and not HaRestart.objects.exists()
    failed = Event.objects.get(action="host_fence", phase=Phase.FAILED)
    assert failed.message.startswith("Failed to fence host lost: power off failed (exit status 1)")
    assert "It stays Non Responsive" in failed.message
    assert not Event.objects.filter(message__contains=PASSWORD).exists()
    assert PASSWORD not in failed.error
    assert fencing.hosts_to_fence() == []  # tried lately: not again before the retry time


LAN_CONF = """name "vireo-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md5 straight
    allowed_auths_user none md5 straight
    allowed_auths_operator none md5 straight
    allowed_auths_admin none md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{control} 0x20"
  user 1 true "" "test" user 10 none md5 straight
  user 2 true "admin" "{password}" admin 10 none md5 straight
"""
EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""
# ipmi_sim's chassis control program: `<prog> <mc> get <parm>...` / `set <parm> <value>...`;
# the power state is a file the test reads.
CONTROL = """#!/bin/sh
state={state}
mc=$1; op=$2; shift 2
if [ "$op" = get ]; then
  for p in "$@"; do
    case $p in power) echo "power:$(cat $state)";; boot) echo "boot:none";; esac
  done
else
  while [ $# -gt 0 ]; do
    case $1 in power) echo "$2" > $state;; esac
    shift 2
  done
fi
"""


@pytest.fixture
def bmc(tmp_path):
    """A BMC simulated by OpenIPMI's ipmi_sim on a UDP port of its own (IPMI v2 / lanplus),
    its machine powered on; yields (port, path of the power state file)."""
    port = free_udp_port()
    state = tmp_path / "power"
    state.write_text("1\n")
    control = tmp_path / "chassis.sh"
    control.write_text(CONTROL.format(state=state))
    control.chmod(0o755)
    conf = tmp_path / "lan.conf"
    conf.write_text(LAN_CONF.format(port=port, control=control, password=PASSWORD))
    emu = tmp_path / "emu.cmds"
    emu.write_text(EMU)
    sim = subprocess.Popen(
        ["ipmi_sim", "-c", str(conf), "-f", str(emu), "-n", "-s", str(tmp_path / "sim")],
        stdin=subprocess.DEVNULL,
        stdout=(tmp_path / "sim.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        probe = fencing.PowerManagement(
            "ipmilan",
            "127.0.0.1",
            "admin",
            PASSWORD,
            (("ipport", str(port)), ("lanplus", "1"), ("cipher", "3")),
        )
        deadline = time.monotonic() + 30
        time.sleep(1)  # its LAN channel is up within a second
        while (answer := fencing.agent_run(probe, "status", timeout=10)).status != 0:
            assert time.monotonic() < deadline, f"ipmi_sim did not answer: {answer}"
            time.sleep(0.3)
        yield port, state
    finally:
        sim.kill()  # the one this fixture started, by its own handle
        sim.wait(10)


def test_the_monitor_fences_a_non_responsive_host_and_restarts_its_ha_vms(
    bmc, sync_hosts, monitor, work
):
    port, state = bmc
    host, vm, spare = lost_host_with_pm(
        # cipher 3 named: ipmi_sim does not list its cipher suites (ipmitool waits 14 s).
        sync_hosts,
        address="127.0.0.1",
        options=f"ipport={port}, lanplus=1, cipher=3",
    )
    assert monitor.fence_cycle() == 1  # inline: a real fence_ipmilan against ipmi_sim
    assert state.read_text().strip() == "0"  # powered off
    host.refresh_from_db()
    assert host.status == HostStatus.NON_RESPONSIVE and host.fenced_at is not None
    assert status_of(vm) == VMStatus.DOWN
    messages = list(
        Event.objects.filter(action="host_fence").order_by("pk").values_list("message", flat=True)
    )
    assert messages == [
        "Host lost is Non Responsive: fencing it (power off) through its power management "
        "(ipmilan at 127.0.0.1).",
        "Host lost was fenced: its power management reports it off. Its virtual machines are "
        "Down and the Highly Available ones are restarted elsewhere.",
    ]
    assert fencing.hosts_to_fence() == []  # fenced: not again while it stays down
    work(monitor.ha_pass)
    vm.refresh_from_db()
    assert (vm.status, vm.host) == (VMStatus.UP, spare)
