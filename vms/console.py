"""Consoles: opening one (a one-time ticket and a graphics password), the one-user console lock
and its takeover, where the web process reaches a VM's graphics, and the Console Disconnect
Action. See docs/console.md.

Opening a console is one short libvirt call (the graphics password) made in the request, with
the host's connect timeout, like the graphics lookup the console's websocket makes: nothing
here is a long task, so nothing here is a job.
"""

import hashlib
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

import hypervisor
from accounts.permissions import can
from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.models import Phase

from .actions import VM_ACTIONS
from .choices import ConsoleDisconnectAction, HostStatus, VMStatus
from .models import ConsoleSession, ConsoleTicket, Host, VirtualMachine
from .services import vm_shutdown

log = logging.getLogger(__name__)

ENTRY = VM_ACTIONS["console"]
TAKEOVER = "console_takeover"  # the role action that lets a user take over another's console
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
ANY_ADDRESS = {"0.0.0.0", "::", ""}
# Linux input key codes: Super (left Meta) + L, the lock-screen key of Windows and GNOME.
LOCK_SCREEN_KEYS = [125, 38]
EXPIRED_AT = datetime(1970, 1, 1, 0, 0, 1)  # a graphics password valid until then opens nothing
_SSH_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")
_SSH_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$")


class ConsoleInUse(ActionRefused):
    """Another user holds the console; `may_take_over` says whether this user may take it."""

    def __init__(self, message: str, *, holder: str, since: datetime, may_take_over: bool):
        super().__init__(message)
        self.holder, self.since, self.may_take_over = holder, since, may_take_over


@dataclass(frozen=True)
class ConsoleOpening:
    """What the console page (or a .vv file) receives: the one-time ticket's token, the
    graphics password it set and until when both are valid, and the graphics it is for."""

    vm: VirtualMachine
    token: str
    password: str
    expires_at: datetime
    graphics: hypervisor.GraphicsInfo
    reach: "ConsoleReach"


@dataclass(frozen=True)
class ConsoleReach:
    """Where the web process finds a VM's graphics port: `address`:`port` directly, or, when
    `ssh` is set, through `ssh -W address:port` to the host (the argument list, no shell).
    `client_address` is what a native client (remote-viewer) is told to connect to, and
    `client_note` says when it cannot reach it from elsewhere."""

    address: str
    port: int
    ssh: tuple[str, ...] = ()
    client_address: str = ""
    client_note: str = ""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def graphics_listen(host: Host | None) -> str:
    """The address the graphics of a VM defined on `host` listen on: VIREO_CONSOLE_LISTEN, or
    127.0.0.1 (the web process then reaches a remote host's port through SSH)."""
    return settings.VIREO_CONSOLE_LISTEN or "127.0.0.1"


def _connection(host: Host):
    return hypervisor.connect(host.uri, timeout=settings.VIREO_HOST_CONNECT_TIMEOUT)


def _usable_vm(vm_id: int, user, verb: str = ENTRY.verb) -> VirtualMachine:
    vm = VirtualMachine.objects.select_related("host", "cluster").filter(pk=vm_id).first()
    if vm is None or not can(user, ENTRY.permission, vm):
        raise ActionRefused("That virtual machine does not exist any more.")
    if not ENTRY.allows(vm.status):
        raise ActionRefused(
            f"Cannot {verb} {vm.name}: it is {VMStatus(vm.status).label}; a console needs it "
            "running."
        )
    if vm.host is None or vm.host.status != HostStatus.UP:
        state = vm.host.get_status_display() if vm.host else "not placed on a host"
        where = f"its host {vm.host.name} is {state}" if vm.host else f"it is {state}"
        raise ActionRefused(f"Cannot {verb} {vm.name}: {where}.")
    return vm


def _holder(vm: VirtualMachine) -> ConsoleSession | None:
    """The live console session of the VM (a stale one does not count)."""
    stale = timezone.now() - timedelta(seconds=settings.VIREO_CONSOLE_LOCK_STALE_SECONDS)
    return ConsoleSession.objects.select_related("user").filter(vm=vm, seen_at__gte=stale).first()


def _check_lock(vm: VirtualMachine, user, *, takeover: bool) -> None:
    held = _holder(vm)
    if held is None or held.user_id == user.pk:
        return
    may = can(user, TAKEOVER, vm)
    if takeover and may:
        return
    since = timezone.localtime(held.since).strftime("%H:%M:%S")
    tail = (
        "Take it over to disconnect them."
        if may
        else "Only an administrator of the VM can take it over; try again when they close it."
    )
    raise ConsoleInUse(
        f"The console of {vm.name} is in use by {held.user.username} since {since}. {tail}",
        holder=held.user.username,
        since=held.since,
        may_take_over=may,
    )


def console_reach(vm: VirtualMachine, graphics: hypervisor.GraphicsInfo) -> ConsoleReach:
    """How the web process reaches `graphics` of `vm`'s host (see ConsoleReach): a local host
    directly; a remote host directly when its graphics listen on an address of the host,
    through an SSH tunnel to the host (the qemu+ssh URI's user, host and port) when they
    listen on its loopback only."""
    parts = urlsplit(vm.host.uri)
    listen = graphics.listen.strip("[]")
    if not parts.hostname:  # the portal's own machine
        address = "127.0.0.1" if listen in ANY_ADDRESS | LOOPBACK else listen
        return ConsoleReach(address, graphics.port, client_address=address)
    hostname = parts.hostname
    if listen not in LOOPBACK:
        address = hostname if listen in ANY_ADDRESS else listen
        return ConsoleReach(address, graphics.port, client_address=address)
    transport = parts.scheme.partition("+")[2]
    note = (
        f"The graphics of host {vm.host.name} listen on its loopback address only: remote-viewer "
        f"reaches them through an SSH tunnel, e.g. ssh -L {graphics.port}:127.0.0.1:"
        f"{graphics.port} {parts.netloc}, then open the file on this machine."
    )
    if transport != "ssh":
        raise ActionRefused(
            f"Cannot open the console of {vm.name}: its graphics listen on the loopback address "
            f"of host {vm.host.name}, which Vireo reaches only over SSH (a qemu+ssh host). Set "
            "VIREO_CONSOLE_LISTEN to an address of the hosts."
        )
    return ConsoleReach(
        "127.0.0.1",
        graphics.port,
        ssh=ssh_tunnel_command(vm.host.uri, graphics.port),
        client_address="127.0.0.1",
        client_note=note,
    )


def ssh_tunnel_command(uri: str, port: int) -> tuple[str, ...]:
    """`ssh -W 127.0.0.1:<port>` to the host of a qemu+ssh URI, as an argument list: the user,
    host name and port are checked (no option can be smuggled in), and the key file the URI
    names (`keyfile=`, an absolute path) is passed on, and its `no_verify=1` (no host key
    check, which libvirt then skips too); batch mode, never a password prompt."""
    parts = urlsplit(uri)
    host, user = parts.hostname or "", parts.username
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _SSH_HOST_RE.match(host):
            raise ActionRefused(
                f"Cannot open an SSH tunnel to {host!r}: not a host name."
            ) from None
    if user is not None and not _SSH_USER_RE.match(user):
        raise ActionRefused(f"Cannot open an SSH tunnel as {user!r}: not a user name.")
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    command += ["-W", f"127.0.0.1:{int(port)}"]
    if parts.port:
        command += ["-p", str(int(parts.port))]
    if user:
        command += ["-l", user]
    query = parse_qs(parts.query)
    keyfile = query.get("keyfile", [""])[0]
    if keyfile.startswith("/") and ".." not in keyfile and "\x00" not in keyfile:
        command += ["-i", keyfile]
    if query.get("no_verify", ["0"])[0] == "1":  # as libvirt's own ssh transport then does
        command += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return (*command, "--", host)


def _graphics_of(vm: VirtualMachine, kinds: tuple[str, ...]) -> hypervisor.GraphicsInfo:
    """The first graphics device of `kinds` the running VM has, with a port."""
    try:
        found = {g.type: g for g in _connection(vm.host).domain_graphics(str(vm.uuid))}
    except hypervisor.HypervisorError as exc:
        raise ActionRefused(f"Cannot open the console of {vm.name}: {exc}") from None
    for kind in kinds:
        if kind in found:
            graphics = found[kind]
            if graphics.port <= 0:
                raise ActionRefused(
                    f"Cannot open the console of {vm.name}: its {kind.upper()} display is not "
                    f"listening (the host reports no port)."
                )
            return graphics
    raise ActionRefused(
        f"Cannot open the console of {vm.name}: it has no {' or '.join(kinds).upper()} graphics "
        "device (a VM gets one when Vireo defines it: shut it down and run it again)."
    )


def console_open(*, vm_id: int, user, takeover: bool = False, native: bool = False):
    """Open a console of a running VM for `user`: checks the role action, the VM's status, its
    host and the console lock (another user's console: refused unless `takeover` by a user who
    may), sets a fresh graphics password valid for VIREO_CONSOLE_TICKET_SECONDS on the VM
    (VNC for the browser; for a `native` client SPICE when the VM has it) and records a
    one-time ticket. Returns a ConsoleOpening."""
    vm = _usable_vm(vm_id, user)
    _check_lock(vm, user, takeover=takeover)
    graphics = _graphics_of(vm, ("spice", "vnc") if native else ("vnc",))
    reach = console_reach(vm, graphics)
    password = hypervisor.consolexml.random_password()
    expires_at = timezone.now() + timedelta(seconds=settings.VIREO_CONSOLE_TICKET_SECONDS)
    valid_to = expires_at.astimezone(UTC).replace(tzinfo=None)
    try:
        _connection(vm.host).set_graphics_password(str(vm.uuid), graphics.type, password, valid_to)
    except hypervisor.HypervisorError as exc:
        raise ActionRefused(f"Cannot open the console of {vm.name}: {exc}") from None
    token = secrets.token_urlsafe(32)
    # Tickets long expired are of no use, not even to say why one was refused: dropped here.
    ConsoleTicket.objects.filter(vm=vm, expires_at__lt=timezone.now() - timedelta(hours=1)).delete()
    ConsoleTicket.objects.create(
        vm=vm,
        user=user,
        token_hash=token_hash(token),
        expires_at=expires_at,
        takeover=takeover,
        # A native client's file is the ticket's one use: it goes to the host, not to Vireo.
        used_at=timezone.now() if native else None,
    )
    how = "a native client file for" if native else "the console of"
    event_record(
        action="console",
        phase=Phase.SUCCEEDED,
        message=f"{actor(user)} opened {how} VM {vm.name}.",
        user=user,
        vm=vm,
    )
    return ConsoleOpening(vm, token, password, expires_at, graphics, reach)


def console_ticket_use(*, vm_id: int, user, token: str) -> ConsoleTicket:
    """Use a console ticket, once: it must be this user's, for this VM, unused and unexpired.
    A second use, an expired or a foreign ticket is refused with a message and changes
    nothing."""
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise ActionRefused("This console ticket is not valid: open the console again.")
    now = timezone.now()
    tickets = ConsoleTicket.objects.filter(token_hash=token_hash(token), vm_id=vm_id, user=user)
    used = tickets.filter(used_at__isnull=True, expires_at__gt=now).update(used_at=now)
    ticket = tickets.first()
    if used:
        return ticket
    if ticket is None:
        raise ActionRefused("This console ticket is not valid: open the console again.")
    if ticket.used_at is not None:
        raise ActionRefused(
            "This console ticket was already used: each opening of the console gets its own. "
            "Open the console again."
        )
    raise ActionRefused(
        f"This console ticket expired (a ticket is valid for "
        f"{settings.VIREO_CONSOLE_TICKET_SECONDS} seconds): open the console again."
    )


def console_target(*, vm_id: int, user) -> ConsoleReach:
    """Where the websocket of `user`'s console of the VM connects: re-checked (role action,
    status, host) and read from the running domain."""
    vm = _usable_vm(vm_id, user)
    return console_reach(vm, _graphics_of(vm, ("vnc",)))


def console_lock_take(*, vm_id: int, user, channel_name: str, takeover: bool) -> str | None:
    """Make `channel_name` (a console websocket of `user`) the VM's console holder. Another
    user's live console is refused (ConsoleInUse) unless the ticket was opened to take it
    over by a user who may; the same user's other console is replaced. Returns the channel of
    the console it replaced, to be told, or None."""
    with transaction.atomic():
        vm = VirtualMachine.objects.select_for_update().filter(pk=vm_id).first()
        if vm is None:
            raise ActionRefused("That virtual machine does not exist any more.")
        _check_lock(vm, user, takeover=takeover)
        previous = ConsoleSession.objects.filter(vm=vm).first()
        if previous is not None:
            previous.delete()
        try:
            ConsoleSession.objects.create(vm=vm, user=user, channel_name=channel_name)
        except IntegrityError:  # cannot happen under the row lock; say so rather than crash
            raise ActionRefused(f"The console of {vm.name} was just taken: try again.") from None
        if previous is not None and previous.user_id != user.pk:
            event_record(
                action="console",
                phase=Phase.SUCCEEDED,
                message=f"{actor(user)} took over the console of VM {vm.name} from "
                f"{previous.user.username}.",
                user=user,
                vm=vm,
            )
    if previous is None or previous.channel_name == channel_name:
        return None
    return previous.channel_name


def console_password_spent(*, vm_id: int) -> None:
    """A console logged in with its ticket's password: give the VM's VNC display a new random
    password, already expired, so the spent one opens nothing (clients in stay in). Failing
    that (the host went away meanwhile), the ticket's expiry still ends it."""
    vm = VirtualMachine.objects.select_related("host").filter(pk=vm_id).first()
    if vm is None or vm.host is None:
        return
    try:
        _connection(vm.host).set_graphics_password(
            str(vm.uuid), "vnc", hypervisor.consolexml.random_password(), EXPIRED_AT
        )
    except hypervisor.HypervisorError as exc:
        log.warning("could not spend the console password of %s: %s", vm.name, exc)


def console_lock_seen(*, vm_id: int, channel_name: str) -> bool:
    """The console websocket is alive: refresh its lock. False when it no longer holds it."""
    return bool(
        ConsoleSession.objects.filter(vm_id=vm_id, channel_name=channel_name).update(
            seen_at=timezone.now()
        )
    )


def console_closed(*, vm_id: int, user, channel_name: str) -> str:
    """A console websocket closed: release the VM's console if it still held it and carry out
    the VM's Console Disconnect Action (nothing when another console took over). Returns what
    was done, for the log ("" for nothing)."""
    released = ConsoleSession.objects.filter(vm_id=vm_id, channel_name=channel_name).delete()[0]
    if not released:
        return ""
    vm = VirtualMachine.objects.select_related("host", "cluster").filter(pk=vm_id).first()
    if vm is None or vm.console_disconnect_action == ConsoleDisconnectAction.NONE:
        return ""
    if vm.console_disconnect_action == ConsoleDisconnectAction.SHUTDOWN:
        try:
            vm_shutdown(vm_id=vm.pk, user=user, reason="Console disconnected")
        except ActionRefused as exc:
            log.info("console disconnect action of %s refused: %s", vm.name, exc)
            return f"shutdown refused: {exc}"
        return "shutdown"
    if vm.status not in (VMStatus.UP, VMStatus.POWERING_UP) or vm.host is None:
        return ""
    try:
        _connection(vm.host).send_keys(str(vm.uuid), LOCK_SCREEN_KEYS)
    except hypervisor.HypervisorError as exc:
        log.warning("could not lock the screen of %s: %s", vm.name, exc)
        return f"lock screen failed: {exc}"
    event_record(
        action="console",
        phase=Phase.SUCCEEDED,
        message=f"The console of VM {vm.name} was closed: its screen was locked (Super+L).",
        user=user,
        vm=vm,
    )
    return "lock screen"
