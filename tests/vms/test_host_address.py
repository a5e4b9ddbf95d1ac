"""The host address policy (vms.host_address): a host address can never make the portal's
machine run a program, read or write a local file, or quote one back. Every transport and
driver libvirt documents is tried by a delegated administrator (ClusterAdmin, who may add
hosts) and by a SuperUser."""

import os
import stat

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from factories import ClusterFactory, SuperUserFactory, UserFactory, grant
from helpers import HX

import hypervisor
from accounts.models import System
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event
from vms import services
from vms.host_address import host_address_check
from vms.models import Host

OK = None
SSH = "qemu+ssh://root@kvm1.example.com/system"

# (URI, what a ClusterAdmin is told, what a SuperUser is told); OK = accepted as given.
CASES = [
    # the local hypervisor: SuperUser only, and only plain qemu:///system
    ("qemu:///system", "Only a SuperUser", OK),
    ("qemu:///session", "qemu:///system, with no parameters", "qemu:///system, with no"),
    ("qemu:///system?socket=/tmp/evil", "with no parameters", "with no parameters"),
    ("qemu:///embed?root=/tmp/x", "with no parameters", "with no parameters"),
    ("qemu+unix:///system", "qemu+unix:// is not allowed", "qemu+unix:// is not allowed"),
    ("qemu+unix:///system?socket=/run/x", "qemu+unix:// is not", "qemu+unix:// is not"),
    ("qemu://kvm1.example.com/system", "qemu:// with a host name", "qemu:// with a host"),
    # SSH
    (SSH, OK, OK),
    ("qemu+ssh://kvm1/system", OK, OK),
    ("qemu+ssh://admin.ops@10.0.0.7:2222/system?no_tty=1&mode=direct&proxy=native", OK, OK),
    ("qemu+ssh://root@[2001:db8::7]/session", OK, OK),
    ("qemu+ssh://kvm1/system?command=/tmp/x", "parameter 'command'", "parameter 'command'"),
    ("qemu+ssh://kvm1/system?netcat=/tmp/nc", "parameter 'netcat'", "parameter 'netcat'"),
    ("qemu+ssh://kvm1/system?socket=/tmp/s", "parameter 'socket'", "parameter 'socket'"),
    ("qemu+ssh://kvm1/system?keyfile=/etc/shadow", "parameter 'keyfile'", "'keyfile'"),
    ("qemu+ssh://kvm1/system?known_hosts=/tmp/k", "'known_hosts'", "'known_hosts'"),
    ("qemu+ssh://kvm1/system?name=qemu:///embed", "parameter 'name'", "parameter 'name'"),
    ("qemu+ssh://kvm1/system?%63ommand=/tmp/x", "parameter '?63ommand'", "'?63ommand'"),
    ("qemu+ssh://kvm1/system?mode=evil", "mode may be", "mode may be"),
    ("qemu+ssh://kvm1/system?no_tty=1&no_tty=1", "given twice", "given twice"),
    ("qemu+ssh://kvm1/system?no_tty", "parameter 'no_tty'", "parameter 'no_tty'"),
    ("qemu+ssh://-oProxyCommand=touch%20x/system", "must be a host name", "must be a host"),
    ("qemu+ssh://-oProxyCommand=x/system", "must be a host name", "must be a host name"),
    ("qemu+ssh://k%76m1/system", "must be a host name", "must be a host name"),
    ("qemu+ssh://-root@kvm1/system", "user name may have", "user name may have"),
    ("qemu+ssh://a@b@kvm1/system", "Give the host's name", "Give the host's name"),
    ("qemu+ssh:///system", "Give the host's name", "Give the host's name"),
    ("qemu+ssh://kvm1:0/system", "port must be", "port must be"),
    ("qemu+ssh://kvm1:70000/system", "port must be", "port must be"),
    ("qemu+ssh://kvm1:22x/system", "port must be", "port must be"),
    ("qemu+ssh://10.0.0.999/system", "not an IP address", "not an IP address"),
    ("qemu+ssh://[::g]/system", "not an IPv6 address", "not an IPv6 address"),
    ("qemu+ssh://kvm1/other", "path must be /system", "path must be /system"),
    ("qemu+ssh://kvm1", "path must be /system", "path must be /system"),
    ("qemu+ssh://kvm1/system#x", "Give a libvirt URI", "Give a libvirt URI"),
    ("qemu+ssh://kvm1/system?no_tty=1 ", OK, OK),  # surrounding spaces are trimmed
    ("qemu+ssh://kvm1/sys tem", "no spaces", "no spaces"),
    ("qemu+ssh://kvm1/system\n", OK, OK),
    ("qemu+ssh://kvm1/sys\x01tem", "no spaces", "no spaces"),
    ("qemu+ssh://kvm1/système", "no spaces", "no spaces"),
    # this machine reached through a network transport is this machine: SuperUser only
    ("qemu+ssh://root@localhost/system", "Only a SuperUser", OK),
    ("qemu+ssh://root@127.0.0.1/system", "Only a SuperUser", OK),
    ("qemu+ssh://[::1]/system", "Only a SuperUser", OK),
    ("qemu+tls://0.0.0.0/system", "Only a SuperUser", OK),
    # the other SSH transports and the external program
    ("qemu+libssh://kvm1/system", "qemu+libssh:// is not allowed", "qemu+libssh:// is not"),
    ("qemu+libssh2://kvm1/system", "qemu+libssh2:// is not allowed", "qemu+libssh2:// is"),
    ("qemu+ext:///system?command=/tmp/x", "qemu+ext:// is not allowed", "qemu+ext:// is not"),
    ("qemu+ext://kvm1/system?command=/tmp/x", "qemu+ext:// is not", "qemu+ext:// is not"),
    # TLS and TCP
    ("qemu+tls://kvm1.example.com/system", OK, OK),
    ("qemu+tls://kvm1.example.com:16514/system?mode=legacy", OK, OK),
    ("qemu+tls://kvm1/system?pkipath=/tmp/pki", "parameter 'pkipath'", "'pkipath'"),
    ("qemu+tls://kvm1/system?no_verify=1", "parameter 'no_verify'", "'no_verify'"),
    ("qemu+tls://kvm1/system?tls_priority=NONE", "'tls_priority'", "'tls_priority'"),
    ("qemu+tls://kvm1/system?no_tty=1", "not allowed on qemu+tls", "not allowed on qemu+tls"),
    ("qemu+tls://root@kvm1/system", "only used with qemu+ssh", "only used with qemu+ssh"),
    ("qemu+tcp://kvm1/system", "qemu+tcp:// is unencrypted", "qemu+tcp:// is unencrypted"),
    # libvirt's test driver: the demo's own node files only (off here, see the demo tests)
    ("test:///default", "belong to the demo only", "belong to the demo only"),
    ("test:///etc/passwd", "belong to the demo only", "belong to the demo only"),
    ("test+ssh://kvm1/default", "belong to the demo only", "belong to the demo only"),
    # every other driver libvirt has, local and remote
    ("xen:///system", "xen:// is not supported", "xen:// is not supported"),
    ("xen+ssh://root@xen1/system", "xen:// is not supported", "xen:// is not supported"),
    ("lxc:///system", "lxc:// is not supported", "lxc:// is not supported"),
    ("lxc+ssh://kvm1/system", "lxc:// is not supported", "lxc:// is not supported"),
    ("vbox:///session", "vbox:// is not supported", "vbox:// is not supported"),
    ("vbox+ssh://kvm1/session", "vbox:// is not supported", "vbox:// is not supported"),
    ("esx://esx1.example.com/?no_verify=1", "esx:// is not supported", "esx:// is not"),
    ("gsx://gsx1.example.com/", "gsx:// is not supported", "gsx:// is not supported"),
    ("vpx://vc1/dc1/cluster1/esx1", "vpx:// is not supported", "vpx:// is not supported"),
    ("hyperv://hv1.example.com/", "hyperv:// is not supported", "hyperv:// is not"),
    ("bhyve:///system", "bhyve:// is not supported", "bhyve:// is not supported"),
    ("vz:///system", "vz:// is not supported", "vz:// is not supported"),
    ("parallels:///system", "parallels:// is not", "parallels:// is not"),
    ("openvz:///system", "openvz:// is not supported", "openvz:// is not supported"),
    ("ch:///system", "ch:// is not supported", "ch:// is not supported"),
    ("vmwareplayer:///session", "vmwareplayer:// is not", "vmwareplayer:// is not"),
    ("vmwarews:///session", "vmwarews:// is not", "vmwarews:// is not"),
    ("vmwarefusion:///session", "vmwarefusion:// is not", "vmwarefusion:// is not"),
    ("phyp://hmc1/managed", "phyp:// is not supported", "phyp:// is not supported"),
    ("uml:///system", "uml:// is not supported", "uml:// is not supported"),
    ("remote://kvm1/", "remote:// is not supported", "remote:// is not supported"),
    ("remote+ssh://kvm1/", "remote:// is not supported", "remote:// is not supported"),
    ("network:///system", "network:// is not supported", "network:// is not"),
    ("storage:///system", "storage:// is not supported", "storage:// is not"),
    ("nodedev:///system", "nodedev:// is not supported", "nodedev:// is not"),
    ("secret:///system", "secret:// is not supported", "secret:// is not"),
    ("interface:///system", "interface:// is not", "interface:// is not"),
    ("nwfilter:///system", "nwfilter:// is not", "nwfilter:// is not"),
    # not a URI at all
    ("", "Give a libvirt URI", "Give a libvirt URI"),
    ("kvm1.example.com", "Give a libvirt URI", "Give a libvirt URI"),
    ("QEMU+SSH://kvm1/system", "Give a libvirt URI", "Give a libvirt URI"),
    ("qemu+ssh://kvm1/" + "s" * 1000, "at most 1000", "at most 1000"),
]


@pytest.fixture
def cluster_admin(db):
    cluster = ClusterFactory()
    account = UserFactory(username="clusteradmin")
    grant(account, "ClusterAdmin", cluster)
    return account, cluster


def _outcome(uri, user):
    try:
        return host_address_check(uri, user=user) == uri.strip() and OK
    except ActionRefused as exc:
        return str(exc)


@pytest.mark.django_db
@pytest.mark.parametrize("uri,delegated,superuser", CASES, ids=[c[0][:60] for c in CASES])
def test_every_transport(settings, cluster_admin, uri, delegated, superuser):
    settings.VIREO_DEMO = False
    settings.VIREO_ALLOW_TCP_HOSTS = False
    account, _cluster = cluster_admin
    for who, want in ((account, delegated), (SuperUserFactory(), superuser)):
        got = _outcome(uri, who)
        if want is OK:
            assert got is OK, f"{uri!r} refused for {who}: {got}"
        else:
            assert got is not OK and want in got, f"{uri!r} for {who}: {got!r}"


@pytest.mark.django_db
def test_tcp_only_when_the_setting_allows_it(settings, cluster_admin):
    account, _ = cluster_admin
    settings.VIREO_ALLOW_TCP_HOSTS = True
    assert host_address_check("qemu+tcp://kvm1:16509/system", user=account) == (
        "qemu+tcp://kvm1:16509/system"
    )
    for uri, message in (
        ("qemu+tcp://kvm1/system?no_tty=1", "parameter 'no_tty'"),
        ("qemu+tcp://root@kvm1/system", r"only used with qemu\+ssh"),
        ("qemu+tcp://localhost/system", "Only a SuperUser"),
    ):
        with pytest.raises(ActionRefused, match=message):
            host_address_check(uri, user=account)


@pytest.mark.django_db
def test_superuser_role_on_the_system_may_add_the_local_hypervisor(cluster_admin):
    account, _ = cluster_admin
    holder = UserFactory(username="superrole")
    grant(holder, "SuperUser", System.get())
    assert host_address_check("qemu:///system", user=holder) == "qemu:///system"
    grant(account, "DataCenterAdmin", System.get())  # everything but storage and roles
    with pytest.raises(ActionRefused, match="Only a SuperUser"):
        host_address_check("qemu:///system", user=account)


@pytest.mark.django_db
def test_demo_test_hosts_only_under_the_demo_directory(settings, tmp_path, cluster_admin):
    account, _ = cluster_admin
    settings.VIREO_DEMO = True
    demo = tmp_path / "demo"
    demo.mkdir()
    good = f"test://{demo}/host9.xml"
    assert host_address_check(good, user=account) == good
    (tmp_path / "secret.xml").write_text("<node/>")
    os.symlink(tmp_path / "secret.xml", demo / "link.xml")
    for uri in (
        "test:///default",
        "test:///etc/passwd",
        f"test://{tmp_path}/host9.xml",
        f"test://{demo}/../secret.xml",
        f"test://{demo}/sub/host9.xml",
        f"test://{demo}/host9.txt",
        f"test://{demo}/.xml",
        f"test://{demo}/link.xml",
        f"test://{demo}/host9.xml?x=1",
        f"test+ssh://kvm1{demo}/host9.xml",
    ):
        with pytest.raises(ActionRefused, match="demo test host"):
            host_address_check(uri, user=account)
    settings.VIREO_DEMO = False
    with pytest.raises(ActionRefused, match="belong to the demo only"):
        host_address_check(good, user=account)


def _script(tmp_path):
    """A program that proves it ran by leaving a file behind."""
    ran = tmp_path / "ran"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {ran}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, ran


@pytest.mark.django_db
def test_cluster_admin_cannot_add_a_host_that_runs_a_program(settings, tmp_path, cluster_admin):
    """The reported attack, through the New Host window: refused, no host, nothing ran; and
    the monitor's connection to what would have been stored is never opened."""
    settings.VIREO_DEMO = True
    account, cluster = cluster_admin
    script, ran = _script(tmp_path)
    client = Client()
    client.force_login(account)
    target = tmp_path / "made" / "overwritten.xml"
    for uri, message in (
        (f"qemu+ext:///system?command={script}", "qemu+ext:// is not allowed"),
        (f"test://{target}", "demo test host"),
        ("test:///etc/passwd", "demo test host"),
        ("qemu:///system", "Only a SuperUser"),
    ):
        response = client.post(
            reverse("vms:host_new"), {"name": "evil", "uri": uri, "cluster": cluster.pk}, headers=HX
        )
        assert response.status_code == 200
        assert message in response.content.decode(), uri
    assert not Host.objects.exists() and not Event.objects.exists()
    assert not ran.exists() and not target.parent.exists()


@pytest.mark.django_db
def test_host_add_applies_the_policy_unless_trusted(tmp_path, cluster_admin):
    account, cluster = cluster_admin
    socket_uri = "qemu:///system?socket=/run/vireo-it/run/libvirt-sock"
    with pytest.raises(ActionRefused, match="with no parameters"):
        services.host_add(user=account, name="it", uri=socket_uri, cluster_id=cluster.pk)
    with pytest.raises(ActionRefused, match="with no parameters"):
        services.host_add(user=None, name="it", uri=socket_uri, cluster_id=cluster.pk)
    assert not Host.objects.exists()
    host = services.host_add(
        user=None, name="it", uri=socket_uri, cluster_id=cluster.pk, trusted=True
    )
    assert host.uri == socket_uri
    with pytest.raises(ActionRefused, match="Give a libvirt URI"):
        services.host_add(
            user=None, name="it2", uri="not a uri", cluster_id=cluster.pk, trusted=True
        )


@pytest.mark.django_db
def test_the_operators_addhost_command_is_trusted(cluster_admin):
    _account, cluster = cluster_admin
    uri = "qemu:///system?socket=/run/vireo-it/run/libvirt-sock"
    call_command("addhost", uri, "--name", "local", "--cluster", cluster.name)
    assert Host.objects.get(name="local").uri == uri
    with pytest.raises(CommandError, match="Give a libvirt URI"):
        call_command("addhost", "qemu+ssh://kvm1/sys tem", "--name", "x", "--cluster", cluster.name)


def test_a_node_file_is_never_quoted_back(tmp_path):
    """test:///<any file> used to put the file's first line into the host's Last Error."""
    leak = tmp_path / "private.txt"
    leak.write_text("s3cret-first-line\nsecond line\n")
    xml = tmp_path / "private.xml"
    xml.write_text("<node><secret>s3cret-in-xml</oops></node>\n")
    for path in (leak, xml):
        with pytest.raises(hypervisor.HostUnreachable) as caught:
            hypervisor.Connection(f"test://{path}")
        assert "s3cret" not in str(caught.value), str(caught.value)
        assert str(path) in str(caught.value)  # still says which file and what is wrong
