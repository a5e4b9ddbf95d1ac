"""The console websocket (`/ws/console/<vm id>/`): it carries RFB (VNC) between noVNC in the
browser and the VM's VNC port on its host, after checking who asks.

1. On connect: a logged-in user holding "Connect to the console" on the VM, else closed with
   4404 (the same answer for a VM that does not exist) or 4401 (not logged in).
2. The page's first frame is its ticket, `{"ticket": token}`: used exactly once
   (vms.console.console_ticket_use), then the console lock is taken (another user's console:
   refused, or taken over when the ticket says so and the user may), then the VM's VNC port
   is reached (directly, or through `ssh -W` to a qemu+ssh host). Any refusal is sent as
   `{"error": message}` and the socket closes with 4403.
3. `{"ok": true}`, then binary frames both ways, byte for byte, until either side closes.
   Once the page has logged in to the display, the ticket's password is spent (LoginWatch).

The socket follows its user's session and grants as the live socket does (logout, a disabled
account, a revoked role end it), keeps its console lock fresh, and on closing releases the lock
and carries out the VM's Console Disconnect Action.
"""

import asyncio
import contextlib
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from accounts.permissions import can
from portal.kernel.errors import ActionRefused
from portal.kernel.live import user_group
from portal.shell.consumers import session_still_valid
from vms.console import (
    console_closed,
    console_lock_seen,
    console_lock_take,
    console_password_spent,
    console_target,
    console_ticket_use,
)
from vms.models import VirtualMachine

log = logging.getLogger(__name__)

NOT_LOGGED_IN, NOT_FOUND, REFUSED, TAKEN_OVER, ENDED = 4401, 4404, 4403, 4409, 4401
TICKET_WAIT_SECONDS = 15  # the page sends its ticket at once
HEARTBEAT_SECONDS = 30
CHUNK = 64 * 1024


def _may_use(user, vm_id: int) -> bool:
    vm = VirtualMachine.objects.filter(pk=vm_id).first()
    return vm is not None and can(user, "console", vm)


class LoginWatch:
    """Follows the start of RFB 3.8 both ways (versions, the server's security types, VNC
    authentication's challenge and its result) to tell the moment the page has logged in to
    the VM's display with the ticket's password. Anything else (another version, other
    security types) is not followed."""

    def __init__(self) -> None:
        self.server, self.client = b"", b""
        self.over = False

    def feed(self, *, server: bytes = b"", client: bytes = b"") -> bool:
        """True once: when the SecurityResult "OK" of VNC authentication has gone by."""
        if self.over:
            return False
        self.server += server[:64]
        self.client += client[:64]
        if len(self.client) >= 12 and self.client[:12] != b"RFB 003.008\n":
            self.over = True
            return False
        if len(self.server) < 13 or len(self.client) < 12:
            return False
        count = self.server[12]
        types = self.server[13 : 13 + count]
        if count == 0 or (len(types) == count and types != b"\x02"):
            self.over = True  # refused, or not (only) VNC authentication
            return False
        end = 13 + count + 16 + 4
        if len(self.server) < end:
            return False
        self.over = True
        return self.server[end - 4 : end] == b"\0\0\0\0"


class ConsoleConsumer(AsyncWebsocketConsumer):
    """One browser console: RFB between the page's noVNC and the VM's VNC port."""

    vm_id: int
    state = "new"  # new -> ticket (waiting for it) -> proxying -> ended
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    tunnel: asyncio.subprocess.Process | None = None
    holds_lock = False
    login: LoginWatch

    async def connect(self):
        user = self.scope.get("user")
        self.vm_id = int(self.scope["url_route"]["kwargs"]["pk"])
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_LOGGED_IN)
            return
        # Accept first, then say why: the page shows the code (a refusal before accepting is an
        # anonymous failed handshake to the browser).
        await self.accept()
        user._vireo_grants = {}
        if not await database_sync_to_async(_may_use)(user, self.vm_id):
            await self._fail("Not found.", NOT_FOUND)
            return
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None) if session is not None else None
        await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        self.state = "ticket"
        self.tasks = [asyncio.ensure_future(self._ticket_deadline())]

    async def _fail(self, message: str, code: int) -> None:
        """End the console saying why: a text frame before the RFB starts, the close frame's
        reason after (noVNC owns the socket's frames then)."""
        if self.state == "ended":
            return
        proxying, self.state = self.state == "proxying", "ended"
        if not proxying:
            with contextlib.suppress(Exception):
                await self.send(text_data=json.dumps({"error": message}))
        await self._teardown()  # the lock is given back before the page hears of the end
        reason = message.encode()[:120].decode(errors="ignore")
        await self.close(code=code, reason=reason)

    async def _ticket_deadline(self):
        await asyncio.sleep(TICKET_WAIT_SECONDS)
        if self.state == "ticket":
            await self._fail("No console ticket was sent: open the console again.", REFUSED)

    # -- frames from the page -----------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.state == "proxying":
            if bytes_data is not None and self.writer is not None:
                self._watch(client=bytes_data)
                self.writer.write(bytes_data)
                await self.writer.drain()
            return
        if self.state != "ticket":
            return
        self.state = "opening"
        try:
            token = json.loads(text_data or "").get("ticket")
        except (ValueError, AttributeError):
            token = None
        user = self.scope["user"]
        try:
            ticket = await database_sync_to_async(console_ticket_use)(
                vm_id=self.vm_id, user=user, token=token
            )
            reach = await database_sync_to_async(console_target)(vm_id=self.vm_id, user=user)
            replaced = await database_sync_to_async(console_lock_take)(
                vm_id=self.vm_id,
                user=user,
                channel_name=self.channel_name,
                takeover=ticket.takeover,
            )
            self.holds_lock = True
        except ActionRefused as exc:
            await self._fail(str(exc), REFUSED)
            return
        if replaced:
            await self.channel_layer.send(
                replaced, {"type": "console.taken", "by": user.get_username()}
            )
        try:
            await self._open(reach)
        except OSError as exc:
            where = f"{reach.address}:{reach.port}" + (" through SSH" if reach.ssh else "")
            await self._fail(f"Cannot reach the console at {where}: {exc}", REFUSED)
            return
        self.state = "proxying"
        self.login = LoginWatch()
        await self.send(text_data=json.dumps({"ok": True}))
        self.tasks += [
            asyncio.ensure_future(self._pump()),
            asyncio.ensure_future(self._heartbeat()),
        ]

    async def _open(self, reach) -> None:
        timeout = settings.VIREO_HOST_CONNECT_TIMEOUT
        if reach.ssh:
            self.tunnel = await asyncio.create_subprocess_exec(
                *reach.ssh,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            self.reader, self.writer = self.tunnel.stdout, self.tunnel.stdin
            return
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(reach.address, reach.port), timeout
        )

    async def _pump(self):
        """The VM's screen to the page, until the VNC server closes."""
        try:
            while True:
                data = await self.reader.read(CHUNK)
                if not data:
                    break
                self._watch(server=data)
                await self.send(bytes_data=data)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.info("console of VM %s: %s", self.vm_id, exc)
        if self.state == "proxying":
            await self._fail(await self._ended_why(), 1000)

    async def _ended_why(self) -> str:
        """Why the display's side closed: the SSH tunnel's own words when it was one."""
        if self.tunnel is None or self.tunnel.stderr is None:
            return "The console was closed by the host."
        try:
            said = await asyncio.wait_for(self.tunnel.stderr.read(300), 2)
        except (TimeoutError, OSError):
            said = b""
        text = said.decode(errors="replace").strip().splitlines()
        return (
            f"The SSH tunnel to the host ended: {text[-1]}"
            if text
            else "The SSH tunnel to the host ended."
        )

    def _watch(self, **data: bytes) -> None:
        """Once the page is in, its ticket's password is spent: the display gets a new one,
        already expired, so the password the page held opens nothing any more."""
        if self.login.feed(**data):
            task = asyncio.ensure_future(
                database_sync_to_async(console_password_spent)(vm_id=self.vm_id)
            )
            self.tasks.append(task)

    async def _heartbeat(self):
        while self.state == "proxying":
            await asyncio.sleep(HEARTBEAT_SECONDS)
            held = await database_sync_to_async(console_lock_seen)(
                vm_id=self.vm_id, channel_name=self.channel_name
            )
            valid = await database_sync_to_async(session_still_valid)(
                self.session_key, self.scope["user"].pk
            )
            if not held:
                self.holds_lock = False
                await self._fail("Another console of this VM took over.", TAKEN_OVER)
            elif not valid:
                await self._fail("Your session ended.", ENDED)

    # -- messages from the portal -------------------------------------------------------------

    async def console_taken(self, message):
        """Another user (an administrator) took this console over."""
        self.holds_lock = False
        await self._fail(
            f"{message.get('by', 'Another user')} took over this console: you were disconnected.",
            TAKEN_OVER,
        )

    async def live_recheck(self, message):
        user = self.scope["user"]
        await database_sync_to_async(user.refresh_from_db)()
        user._vireo_grants = {}
        if not await database_sync_to_async(_may_use)(user, self.vm_id):
            await self._fail("You may no longer use this console.", NOT_FOUND)

    async def live_close(self, message):
        key = message.get("session_key")
        if key is None or key == getattr(self, "session_key", None):
            await self._fail("You logged out.", ENDED)

    async def live_session_check(self, message):
        valid = await database_sync_to_async(session_still_valid)(
            getattr(self, "session_key", None), self.scope["user"].pk
        )
        if not valid:
            await self._fail("Your session ended.", ENDED)

    async def live_changed(self, message):
        """Not following topics: nothing to do."""

    # -- the end ------------------------------------------------------------------------------

    async def disconnect(self, code):
        self.state = "ended"
        await self._teardown()

    async def _teardown(self):
        current = asyncio.current_task()
        for task in getattr(self, "tasks", []):
            if task is not current:
                task.cancel()
        self.tasks = []
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
            self.writer = None
        if self.tunnel is not None and self.tunnel.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.tunnel.kill()
            await self.tunnel.wait()
            self.tunnel = None
        if self.channel_layer is not None and self.scope.get("user") is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(
                    user_group(self.scope["user"].pk), self.channel_name
                )
        if self.holds_lock:
            self.holds_lock = False
            done = await database_sync_to_async(console_closed)(
                vm_id=self.vm_id, user=self.scope["user"], channel_name=self.channel_name
            )
            if done:
                log.info("console of VM %s closed: %s", self.vm_id, done)
