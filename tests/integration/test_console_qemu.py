"""The console on a real libvirtd with qemu: a VM Vireo defined and ran has a VNC display with
an expired password; a ticket sets one; Vireo's console websocket proxies RFB to the display,
where the ticket's password passes VNC authentication (DES) and the screen arrives; a reused
ticket and a wrong password are refused; an administrator's takeover disconnects the first
user, telling them why. The same libvirtd reached as a qemu+ssh host (through a private sshd on
loopback): the console goes through the SSH tunnel Vireo opens."""

import asyncio
import os
import struct
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from factories import (
    ClusterFactory,
    HostFactory,
    StorageDomainFactory,
    UserFactory,
    VMFactory,
    grant,
)
from libvirtd import SOCKET
from sshd import SSHD, PrivateSshd
from test_vm_lifecycle_qemu import create_vm, status

from portal.shell.console_consumer import ConsoleConsumer
from vms.choices import HostStatus, VMStatus
from vms.console import console_open
from vms.jobs import vm_domain_spec
from vms.models import ConsoleSession
from vms.services import vm_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def site(libvirt_uri, qemu_pool):
    cluster = ClusterFactory(shutdown_timeout=2)
    host = HostFactory(cluster=cluster, uri=libvirt_uri, status=HostStatus.UP)
    domain = StorageDomainFactory(data_center=cluster.data_center, pool_name=qemu_pool)
    return cluster, host, domain


@pytest.fixture
def own_channel_prefix(settings):
    layers = {name: dict(conf) for name, conf in settings.CHANNEL_LAYERS.items()}
    layers["default"]["CONFIG"] = {
        **layers["default"]["CONFIG"],
        "prefix": f"console-{uuid.uuid4().hex[:12]}",
    }
    settings.CHANNEL_LAYERS = layers


def vnc_response(password: str, challenge: bytes) -> bytes:
    """VNC authentication: the challenge encrypted with DES, keyed by the password's first 8
    bytes with each byte's bits reversed."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


class Rfb:
    """An RFB client over Vireo's console websocket (what noVNC does in the browser)."""

    def __init__(self, communicator: WebsocketCommunicator):
        self.ws, self.buffer = communicator, b""

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            frame = await self.ws.receive_output(timeout=15)
            assert frame["type"] == "websocket.send", frame
            self.buffer += frame["bytes"]
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def write(self, data: bytes) -> None:
        await self.ws.send_to(bytes_data=data)

    async def login(self, password: str) -> int:
        """Handshake and VNC authentication; the SecurityResult (0: accepted)."""
        version = await self.read(12)
        assert version.startswith(b"RFB 003.00"), version
        await self.write(b"RFB 003.008\n")
        count = (await self.read(1))[0]
        types = await self.read(count)
        assert 2 in types, types  # VNC authentication: the display has a password
        await self.write(b"\x02")
        await self.write(vnc_response(password, await self.read(16)))
        return struct.unpack(">I", await self.read(4))[0]

    async def screen(self) -> tuple[int, int, bytes]:
        """ClientInit, ServerInit, then one full FramebufferUpdate in raw 32-bit pixels."""
        await self.write(b"\x01")  # shared
        width, height = struct.unpack(">HH", await self.read(4))
        await self.read(16)  # pixel format
        await self.read(struct.unpack(">I", await self.read(4))[0])  # desktop name
        await self.write(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw
        await self.write(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        kind, _, rects = struct.unpack(">BBH", await self.read(4))
        assert kind == 0, kind
        pixels = b""
        for _ in range(rects):
            _x, _y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
            assert encoding == 0, encoding
            pixels += await self.read(w * h * 4)
        return width, height, pixels


async def console_socket(user, vm) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(ConsoleConsumer.as_asgi(), f"/ws/console/{vm.pk}/")
    communicator.scope["user"] = user
    communicator.scope["url_route"] = {"kwargs": {"pk": vm.pk}}
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def opened(user, vm, token: str) -> WebsocketCommunicator:
    communicator = await console_socket(user, vm)
    await communicator.send_json_to({"ticket": token})
    assert await communicator.receive_json_from(timeout=15) == {"ok": True}
    return communicator


def test_console_through_vireo(site, admin, work, work_off, conn, prefix, own_channel_prefix):
    vm = create_vm(f"{prefix}-vm", site, admin, work_off, conn)
    work(lambda: vm_run(vm_id=vm.pk, user=admin))
    assert status(vm) == VMStatus.UP
    graphics = {g.type: g for g in conn.domain_graphics(str(vm.uuid))}
    assert graphics["vnc"].port > 0 and graphics["vnc"].listen == "127.0.0.1"
    assert graphics["vnc"].password_valid_to == "1970-01-01T00:00:01"
    carol = UserFactory(username="carol")
    grant(carol, "UserRole", vm)

    async def scenario():
        # Carol opens the console: the ticket's password passes VNC authentication and the
        # firmware's screen arrives through Vireo's websocket.
        first = await database_sync_to_async(console_open)(vm_id=vm.pk, user=carol)
        ws = await opened(carol, vm, first.token)
        rfb = Rfb(ws)
        assert await rfb.login(first.password) == 0
        width, height, pixels = await rfb.screen()
        assert width >= 640 and height >= 200
        assert len(set(pixels[i : i + 4] for i in range(0, len(pixels), 4))) > 1  # not blank
        assert await database_sync_to_async(
            ConsoleSession.objects.filter(vm=vm, user=carol).exists
        )()
        # Once she is in, her ticket's password is spent: the display's expired again.
        for _ in range(100):
            vnc = {g.type: g for g in conn.domain_graphics(str(vm.uuid))}["vnc"]
            if vnc.password_valid_to == "1970-01-01T00:00:01":
                break
            await asyncio.sleep(0.1)
        assert vnc.password_valid_to == "1970-01-01T00:00:01"

        # Her ticket does not open a second console.
        again = await console_socket(carol, vm)
        await again.send_json_to({"ticket": first.token})
        assert "already used" in (await again.receive_json_from(timeout=15))["error"]

        # An administrator takes over: Carol is disconnected and told why.
        takeover = await database_sync_to_async(console_open)(
            vm_id=vm.pk, user=admin, takeover=True
        )
        boss = await opened(admin, vm, takeover.token)
        while True:  # screen updates may still be on their way to Carol
            frame = await ws.receive_output(timeout=15)
            if frame["type"] == "websocket.close":
                break
        assert frame["code"] == 4409 and "took over" in frame["reason"]
        wrong = "x" if takeover.password[0] != "x" else "y"
        assert await Rfb(boss).login(wrong + takeover.password[1:]) != 0  # a wrong password
        await boss.disconnect()

    asyncio.run(scenario())
    assert not ConsoleSession.objects.filter(vm=vm).exists()


@pytest.fixture
def sshd(tmp_path):
    if not SSHD.exists() or os.geteuid() != 0:
        pytest.skip("needs openssh-server and root (a private sshd logging in as root)")
    server = PrivateSshd(tmp_path).start()
    yield server
    server.stop()


def test_console_of_a_qemu_ssh_host_goes_through_an_ssh_tunnel(
    sshd, admin, conn, prefix, own_channel_prefix
):
    uri = (
        f"qemu+ssh://root@127.0.0.1:{sshd.port}/system"
        f"?socket={SOCKET}&keyfile={sshd.key}&no_verify=1"
    )
    host = HostFactory(uri=uri, status=HostStatus.UP)
    vm = VMFactory(name=f"{prefix}-ssh", host=host, status=VMStatus.UP, memory_mb=64)
    conn.define_domain(vm_domain_spec(vm))  # diskless: the firmware draws its screen
    conn.start(str(vm.uuid))
    opening = console_open(vm_id=vm.pk, user=admin)  # over qemu+ssh: the password is set
    assert opening.reach.ssh[:1] == ("ssh",) and opening.reach.ssh[-2:] == ("--", "127.0.0.1")
    assert f"127.0.0.1:{opening.graphics.port}" in opening.reach.ssh

    async def scenario():
        ws = await opened(admin, vm, opening.token)
        rfb = Rfb(ws)
        assert await rfb.login(opening.password) == 0
        _width, _height, pixels = await rfb.screen()
        assert len(set(pixels[i : i + 4] for i in range(0, len(pixels), 4))) > 1
        await ws.disconnect()

    asyncio.run(scenario())
