"""Part 5: the console's round trip, key press to screen change (issue 10 part 3).

A real qemu VM on the integration suite's private libvirtd boots a 512-byte boot sector made
here (no download: it hides the cursor, then echoes every key it reads with the BIOS). Vireo
opens its console (ticket, graphics password), and an RFB client speaks through Vireo's console
websocket (the consumer the browser's noVNC talks to, in this process): after VNC
authentication and a full screen, each round asks for an incremental update, sends a key
press and release, and times until the FramebufferUpdate that draws the echoed character.
Everything made is removed afterwards.
"""

import asyncio
import statistics
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# xor bx,bx; mov ah,1; mov ch,0x20; int 10h (cursor off); then for ever: xor ah,ah; int 16h
# (read a key); mov ah,0eh; int 10h (print it); jmp back.
ECHO_BOOT_SECTOR = bytes.fromhex("31dbb401b520cd1030e4cd16b40ecd10ebf6").ljust(510, b"\0")
ECHO_BOOT_SECTOR += b"\x55\xaa"


def _libvirtd():
    sys.path.insert(0, str(REPO / "tests"))
    from integration import libvirtd

    return libvirtd


def _vnc_response(password: str, challenge: bytes) -> bytes:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


class _Rfb:
    def __init__(self, communicator):
        self.ws, self.buffer = communicator, b""

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            frame = await self.ws.receive_output(timeout=30)
            if frame["type"] != "websocket.send":
                raise RuntimeError(f"the console closed: {frame}")
            self.buffer += frame["bytes"]
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def write(self, data: bytes) -> None:
        await self.ws.send_to(bytes_data=data)

    async def start(self, password: str) -> None:
        await self.read(12)
        await self.write(b"RFB 003.008\n")
        await self.read((await self.read(1))[0])
        await self.write(b"\x02")
        await self.write(_vnc_response(password, await self.read(16)))
        if struct.unpack(">I", await self.read(4))[0] != 0:
            raise RuntimeError("VNC authentication failed")
        await self.write(b"\x01")
        self.width, self.height = struct.unpack(">HH", await self.read(4))
        self.bytes_per_pixel = (await self.read(16))[0] // 8
        await self.read(struct.unpack(">I", await self.read(4))[0])
        await self.write(struct.pack(">BxHi", 2, 1, 0))  # raw encoding only
        await self.update(incremental=False)

    async def update(self, *, incremental: bool) -> int:
        """Ask for an update and read it; the number of rectangles."""
        await self.write(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))
        while True:
            kind = (await self.read(1))[0]
            if kind == 0:
                break
            if kind == 2:  # bell
                continue
            raise RuntimeError(f"unexpected server message {kind}")
        rects = struct.unpack(">xH", await self.read(3))[0]
        for _ in range(rects):
            _x, _y, w, h, _encoding = struct.unpack(">HHHHi", await self.read(12))
            await self.read(w * h * self.bytes_per_pixel)
        return rects

    async def press(self, keysym: int) -> None:
        await self.write(struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0, keysym))


def measure(user, presses: int = 50) -> dict:
    from channels.testing import WebsocketCommunicator

    import hypervisor
    from portal.shell.console_consumer import ConsoleConsumer
    from vms.choices import HostStatus, VMStatus
    from vms.console import console_open
    from vms.models import Cluster, DataCenter, Host, VirtualMachine

    libvirtd = _libvirtd()
    uri = libvirtd.ensure_libvirtd()
    suffix = uuid.uuid4().hex[:8]
    pool = f"vireo-bench-console-{suffix}"
    workdir = Path(tempfile.mkdtemp(prefix="vireo-bench-console-"))
    (workdir / "echo.img").write_bytes(ECHO_BOOT_SECTOR.ljust(1024 * 1024, b"\0"))
    libvirtd.make_pool(uri, pool, workdir)
    conn = hypervisor.Connection(uri)
    dc = DataCenter.objects.create(name=f"bench-console-{suffix}")
    cluster = Cluster.objects.create(name="console", data_center=dc)
    host = Host.objects.create(name=f"bench-console-{suffix}", cluster=cluster, uri=uri)
    Host.objects.filter(pk=host.pk).update(status=HostStatus.UP)
    vm = VirtualMachine.objects.create(
        name=f"bench-console-{suffix}", cluster=cluster, host=host, memory_mb=64, vcpus=1
    )
    spec = hypervisor.DomainSpec(
        uuid=str(vm.uuid),
        name=vm.name,
        memory_mb=64,
        vcpus=1,
        disks=(hypervisor.DiskSpec(pool=pool, volume="echo.img", target="vda"),),
    )
    try:
        conn.define_domain(spec)
        conn.start(str(vm.uuid))
        VirtualMachine.objects.filter(pk=vm.pk).update(status=VMStatus.UP)
        started = time.perf_counter()
        opening = console_open(vm_id=vm.pk, user=user)
        open_ms = (time.perf_counter() - started) * 1000

        async def rounds() -> list[float]:
            communicator = WebsocketCommunicator(ConsoleConsumer.as_asgi(), f"/ws/console/{vm.pk}/")
            communicator.scope["user"] = user
            communicator.scope["url_route"] = {"kwargs": {"pk": vm.pk}}
            await communicator.connect()
            await communicator.send_json_to({"ticket": opening.token})
            answer = await communicator.receive_json_from(timeout=30)
            if answer != {"ok": True}:
                raise RuntimeError(f"the console refused: {answer}")
            rfb = _Rfb(communicator)
            await rfb.start(opening.password)
            updates: asyncio.Queue = asyncio.Queue()

            async def reader():  # every FramebufferUpdate, as (when it began, rectangles)
                while True:
                    kind = (await rfb.read(1))[0]
                    when = time.perf_counter()
                    if kind == 2:
                        continue
                    rects = struct.unpack(">xH", await rfb.read(3))[0]
                    for _ in range(rects):
                        _x, _y, w, h, _e = struct.unpack(">HHHHi", await rfb.read(12))
                        await rfb.read(w * h * rfb.bytes_per_pixel)
                    await updates.put((when, rects))

            async def round_trip(n: int) -> float | None:
                while not updates.empty():
                    updates.get_nowait()
                await rfb.write(struct.pack(">BBHHHH", 3, 1, 0, 0, rfb.width, rfb.height))
                began = time.perf_counter()
                await rfb.press(ord("a") + n % 26)
                try:
                    when, _rects = await asyncio.wait_for(updates.get(), 5)
                except TimeoutError:
                    return None
                await asyncio.sleep(0.05)  # the rest of the echo's drawing, if any
                return when - began

            task = asyncio.ensure_future(reader())
            # The firmware takes a while to reach the boot sector, and keys pressed while it
            # sets up the keyboard are lost with the keyboard: wait until the screen has been
            # still for 6 s (the boot sector draws nothing until a key comes).
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await rfb.write(struct.pack(">BBHHHH", 3, 1, 0, 0, rfb.width, rfb.height))
                try:
                    await asyncio.wait_for(updates.get(), 6)
                except TimeoutError:
                    break
            else:
                raise RuntimeError("the VM's screen never settled")
            for n in range(3):  # warm up
                if await round_trip(n) is None:
                    raise RuntimeError("the VM does not echo key presses")
            times = []
            for n in range(presses):
                elapsed = await round_trip(n)
                if elapsed is None:
                    if task.done():
                        task.result()  # the reader's own error
                    raise RuntimeError(f"key press {n + 1} was not echoed within 5 s")
                times.append(elapsed)
            task.cancel()
            await communicator.disconnect()
            return times

        times = asyncio.run(rounds())
    finally:
        for step in (conn.destroy, conn.undefine_domain):
            try:
                step(str(vm.uuid))
            except hypervisor.HypervisorError:
                pass
        conn.close()
        libvirtd.remove_pool(uri, pool)
        VirtualMachine.objects.filter(pk=vm.pk).delete()
        Host.objects.filter(pk=host.pk).delete()
        cluster.delete()
        dc.delete()
    ms = sorted(t * 1000 for t in times)
    return {
        "presses": len(ms),
        "open_ms": open_ms,
        "median_ms": statistics.median(ms),
        "p95_ms": ms[max(0, round(0.95 * len(ms)) - 1)],
        "min_ms": ms[0],
        "max_ms": ms[-1],
    }
