"""What a guest's qemu-guest-agent reports (part of Connection): host name, operating system
and kernel, time zone, logged-in users and the addresses of its interfaces.

Read with libvirt's own agent calls: virDomainGetGuestInfo (`dom.guestInfo`) and
virDomainInterfaceAddresses with the agent as source. A guest whose agent is not configured,
not connected or silent gives None (it is no error: most guests have no agent until one is
installed), and a short response timeout keeps a silent agent from holding the caller.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.errors import translated

# Seconds an agent may take to answer one command before it counts as not answering.
AGENT_TIMEOUT = 2

GUEST_INFO_TYPES = (
    libvirt.VIR_DOMAIN_GUEST_INFO_USERS
    | libvirt.VIR_DOMAIN_GUEST_INFO_OS
    | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE
    | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
)

# The errors that mean "no agent answers here", not "the call failed": the agent is not
# configured (no channel) or not connected (not running in the guest), timed out, lost its
# sync, the domain is not running, or the driver has no agent at all.
AGENT_SILENT_CODES = frozenset(
    {
        libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
        libvirt.VIR_ERR_AGENT_UNSYNCED,
        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
        libvirt.VIR_ERR_OPERATION_INVALID,
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    }
)


@dataclass(frozen=True)
class GuestUser:
    """A user logged in to the guest (`domain` is the Windows domain, "" on Linux)."""

    name: str
    domain: str = ""
    login_time: float | None = None  # seconds since the epoch

    def __str__(self) -> str:
        return f"{self.domain}\\{self.name}" if self.domain else self.name


@dataclass(frozen=True)
class GuestInterface:
    """An interface of the guest as its agent reports it: name, MAC and "address/prefix"s."""

    name: str
    mac: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class GuestAgentInfo:
    """What the guest agent of one domain reported at one moment. Fields the agent did not
    report are empty (an older agent has no guest-get-users, a Windows one no kernel ...)."""

    hostname: str = ""
    os_name: str = ""  # the pretty name: "Debian GNU/Linux 12 (bookworm)"
    os_version: str = ""
    kernel_release: str = ""
    kernel_version: str = ""
    machine: str = ""  # x86_64 ...
    timezone: str = ""  # "UTC", "CET" ...
    timezone_offset: int | None = None  # seconds east of UTC
    users: tuple[GuestUser, ...] = ()
    interfaces: tuple[GuestInterface, ...] = field(default_factory=tuple)

    @property
    def ip_addresses(self) -> list[str]:
        """Every address of the guest's interfaces but loopback ones, without prefixes, in the
        agent's order, each once."""
        seen: list[str] = []
        for nic in self.interfaces:
            for address in nic.addresses:
                ip = address.partition("/")[0]
                try:
                    if ipaddress.ip_address(ip.partition("%")[0]).is_loopback:
                        continue
                except ValueError:
                    continue
                if ip not in seen:
                    seen.append(ip)
        return seen


def _text(params: dict, key: str) -> str:
    value = params.get(key)
    return "" if value is None else str(value)


def guest_info_parse(params: dict, interfaces: dict | None = None) -> GuestAgentInfo:
    """A GuestAgentInfo from virDomainGetGuestInfo's typed parameters (`user.count`,
    `user.<n>.name`, `os.pretty-name`, `os.kernel-release`, `timezone.name`, `hostname` ...)
    and virDomainInterfaceAddresses' dict (name -> {'hwaddr', 'addrs': [{'addr', 'prefix'}]})."""
    users = []
    for n in range(int(params.get("user.count") or 0)):
        name = _text(params, f"user.{n}.name")
        if not name:
            continue
        login_ms = params.get(f"user.{n}.login-time")
        users.append(
            GuestUser(
                name=name,
                domain=_text(params, f"user.{n}.domain"),
                login_time=login_ms / 1000 if isinstance(login_ms, int | float) else None,
            )
        )
    nics = []
    for name, nic in sorted((interfaces or {}).items()):
        addrs = tuple(
            f"{a.get('addr')}/{a.get('prefix')}" for a in nic.get("addrs") or () if a.get("addr")
        )
        nics.append(
            GuestInterface(name=str(name), mac=str(nic.get("hwaddr") or ""), addresses=addrs)
        )
    offset = params.get("timezone.offset")
    return GuestAgentInfo(
        hostname=_text(params, "hostname"),
        os_name=_text(params, "os.pretty-name") or _text(params, "os.name"),
        os_version=_text(params, "os.version"),
        kernel_release=_text(params, "os.kernel-release"),
        kernel_version=_text(params, "os.kernel-version"),
        machine=_text(params, "os.machine"),
        timezone=_text(params, "timezone.name"),
        timezone_offset=offset if isinstance(offset, int) else None,
        users=tuple(users),
        interfaces=tuple(nics),
    )


class AgentMixin(ConnectionBase):
    """The guest agents of the host's domains."""

    def _agent_params(self, dom: libvirt.virDomain, timeout: int) -> dict | None:
        """virDomainGetGuestInfo's typed parameters (None: no agent answers), after bounding
        the agent's answer time (the setting lives with the running domain in libvirtd)."""
        dom.agentSetResponseTimeout(timeout, 0)
        return dom.guestInfo(GUEST_INFO_TYPES, 0)

    def _agent_interfaces(self, dom: libvirt.virDomain) -> dict:
        """virDomainInterfaceAddresses as the guest agent reports them."""
        return dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)

    def guest_agent_info(self, uuid: str, *, timeout: int = AGENT_TIMEOUT) -> GuestAgentInfo | None:
        """What the domain's guest agent reports now, or None when no agent answers (not
        configured, not connected, silent for `timeout` s, or the domain is not running).
        A lost host or a missing domain raises HypervisorError as everywhere else."""
        dom = self._domain(uuid)
        try:
            params = self._agent_params(dom, timeout)
            if params is None:
                return None
            interfaces = self._agent_interfaces(dom)
        except libvirt.libvirtError as err:
            if err.get_error_code() in AGENT_SILENT_CODES and self.is_alive():
                return None
            with translated(self.is_alive):
                raise
        return guest_info_parse(params, interfaces)
