"""The host address policy: which libvirt URIs a user may add a host by.

A libvirt URI is an instruction to the portal's own machine: `qemu+ext://...?command=` runs a
program, `test:///path` reads and (through the demo's node files) writes a local file,
`?socket=`, `?keyfile=` or `?pkipath=` point libvirt at local paths. So a user adding a host
gets only what names a remote KVM host:

- `qemu+ssh://[user@]host[:port]/system` and `qemu+tls://...`; `qemu+tcp://...` (unencrypted)
  only when `VIREO_ALLOW_TCP_HOSTS` is on;
- the portal machine's own hypervisor, `qemu:///system` (or a loopback host name), for a
  SuperUser only;
- `test:///<VAR_DIR>/demo/<name>.xml`, the demo's own node files, only when `VIREO_DEMO` is on;
- query parameters from a short allow-list with fixed values (never `command`, `socket`,
  `netcat`, `keyfile`, `pkipath`, `no_verify`, ...).

Trusted callers skip the policy: the `addhost` command, run by the machine's operator (who
can run any program there anyway), and code or test fixtures that create Host rows directly.
"""

import ipaddress
import re
from pathlib import Path

from django.conf import settings

from accounts.catalogue import ACTIONS
from accounts.models import System
from accounts.permissions import actions_on
from portal.kernel.errors import ActionRefused

URI_MAX = 1000
EXAMPLE = "qemu+ssh://root@host.example.com/system"

_URI_RE = re.compile(
    r"^(?P<driver>[a-z][a-z0-9]*)(?:\+(?P<transport>[a-z0-9]+))?://"
    r"(?P<authority>[^/?#]*)(?P<path>/[^?#]*)?(?:\?(?P<query>[^#]*))?$"
)
_AUTHORITY_RE = re.compile(
    r"^(?:(?P<user>[^@]*)@)?(?P<host>\[[^\]]*\]|[^:@]*)(?::(?P<port>[^:@]*))?$"
)
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NODE_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.xml$")

REMOTE_TRANSPORTS = ("ssh", "tls", "tcp")
REMOTE_PATHS = ("/system", "/session")
# parameter -> the values a user may give it; which transports take it.
PARAMETERS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "mode": (frozenset({"auto", "legacy", "direct"}), REMOTE_TRANSPORTS),
    "no_tty": (frozenset({"0", "1"}), ("ssh",)),
    "proxy": (frozenset({"auto", "netcat", "native"}), ("ssh",)),
}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _refuse(message: str):
    raise ActionRefused(message)


def is_superuser(user) -> bool:
    """A superuser account, or a user holding every action on the System (the SuperUser role)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or actions_on(user, System.get()) >= set(ACTIONS)


def demo_dir() -> Path:
    """Where the demo keeps its test hosts' node files."""
    return Path(settings.VAR_DIR) / "demo"


def host_address_check(uri: str, *, user, trusted: bool = False) -> str:
    """`uri` as it is stored, if `user` may add a host by it; else ActionRefused saying why.
    `trusted` (the operator's `addhost`) checks only that it is one printable libvirt URI."""
    uri = (uri or "").strip()
    if not uri or len(uri) > URI_MAX or re.search(r"[^\x21-\x7e]", uri):
        _refuse(
            f"Give a libvirt URI such as qemu:///system or {EXAMPLE} "
            f"(no spaces, at most {URI_MAX} characters)."
        )
    match = _URI_RE.match(uri)
    if match is None:
        _refuse(f"Give a libvirt URI such as qemu:///system or {EXAMPLE}.")
    if trusted:
        return uri
    driver, transport = match["driver"], match["transport"]
    authority, path, query = match["authority"], match["path"] or "", match["query"]
    if driver == "test":
        _test_check(transport, authority, path, query)
        return uri
    if driver != "qemu":
        _refuse(
            f"Vireo manages KVM hosts: {driver}:// is not supported. Use {EXAMPLE} "
            "or qemu+tls://host.example.com/system."
        )
    if transport is None and not authority:
        if path != "/system" or query is not None:
            _refuse("The local hypervisor is added as qemu:///system, with no parameters.")
        if not is_superuser(user):
            _refuse("Only a SuperUser may add this machine's own hypervisor (qemu:///system).")
        return uri
    if transport not in REMOTE_TRANSPORTS:
        shown = f"qemu+{transport}://" if transport else "qemu:// with a host name"
        _refuse(
            f"{shown} is not allowed: add a host through qemu+ssh:// or qemu+tls:// "
            f"(for example {EXAMPLE})."
        )
    if transport == "tcp" and not settings.VIREO_ALLOW_TCP_HOSTS:
        _refuse(
            "qemu+tcp:// is unencrypted and turned off on this installation: use qemu+ssh:// "
            "or qemu+tls:// (an administrator may allow it with VIREO_ALLOW_TCP_HOSTS)."
        )
    loopback = _authority_check(authority, transport)
    if loopback and not is_superuser(user):
        _refuse("Only a SuperUser may add this machine's own hypervisor.")
    if path not in REMOTE_PATHS:
        _refuse(f"The URI's path must be /system (or /session), as in {EXAMPLE}.")
    _query_check(query, transport)
    return uri


def _authority_check(authority: str, transport: str) -> bool:
    """Validate [user@]host[:port]; True when the host is this machine (loopback)."""
    parts = _AUTHORITY_RE.match(authority)
    if parts is None or not parts["host"]:
        _refuse(f"Give the host's name in the URI, as in {EXAMPLE}.")
    if parts["user"] is not None:
        if transport != "ssh":
            _refuse("A user name in the URI is only used with qemu+ssh://.")
        if not _USER_RE.match(parts["user"]):
            _refuse("The URI's user name may have letters, digits, '.', '_' and '-' only.")
    if parts["port"] is not None:
        port = parts["port"]
        if (
            not (port.isascii() and port.isdigit())
            or not 1 <= int(port) <= 65535
            or port.startswith("0")
        ):
            _refuse("The URI's port must be a number from 1 to 65535.")
    host = parts["host"]
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            _refuse(f"{host} is not an IPv6 address.")
        return address.is_loopback or address.is_unspecified
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        address = None
    if address is not None:
        return address.is_loopback or address.is_unspecified
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        _refuse(
            "The URI's host must be a host name (letters, digits and '-' between dots) "
            "or an IP address."
        )
    if labels[-1].isdigit():
        _refuse(f"{host} is not an IP address.")
    return host.lower().rstrip(".") in _LOOPBACK_NAMES


def _query_check(query: str | None, transport: str) -> None:
    if query is None:
        return
    allowed = sorted(p for p, (_values, on) in PARAMETERS.items() if transport in on)
    seen = set()
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        rule = PARAMETERS.get(name)
        if not sep or rule is None or transport not in rule[1]:
            shown = re.sub(r"[^A-Za-z0-9_.-]", "?", name)[:40]
            _refuse(
                f"The URI parameter '{shown}' is not allowed on qemu+{transport}://; "
                f"allowed: {', '.join(allowed) or 'none'}."
            )
        if value not in rule[0]:
            _refuse(f"The URI parameter {name} may be {', '.join(sorted(rule[0]))}.")
        if name in seen:
            _refuse(f"The URI parameter {name} is given twice.")
        seen.add(name)


def _test_check(transport, authority: str, path: str, query) -> None:
    """test:/// hosts: the demo's own node files, only in the demo."""
    if not settings.VIREO_DEMO:
        _refuse(f"test:/// hosts belong to the demo only. Use {EXAMPLE}.")
    where = demo_dir()
    if transport is not None or authority or query is not None:
        _refuse(f"A demo test host is test://{where}/<name>.xml, with no parameters.")
    node = Path(path)
    if (
        ".." in node.parts
        or not _NODE_FILE_RE.match(node.name)
        or node.parent.resolve() != where.resolve()
        or (node.is_symlink())
    ):
        _refuse(f"A demo test host's node file must be test://{where}/<name>.xml.")
