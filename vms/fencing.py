"""Power Management: fencing a host that went Non Responsive with its IPMI fence agent
(Debian's fence-agents `fence_ipmilan`), so its Highly Available VMs can be restarted
elsewhere without their disks ever running twice.

What an administrator types in Edit Host's Power Management tab is checked strictly here
(`power_management_check`) before it is stored, and again before it is used: the agent gets it
as `name=value` lines on its standard input (fence-agents' stdin interface), never on a
command line (where any user of the machine could read the password) and never through a
shell. The password is never logged nor put in an Event; the agent's output is scrubbed of it.

The monitor fences (`host_fence`): `off`, then `status` must say the host is off; on success
the host's VMs are released (vms.high_availability.host_vms_released). A fence that fails
leaves the host Non Responsive and its VMs Unknown, with an Event; it is tried again after
VIREO_FENCE_RETRY_SECONDS.
"""

import ipaddress
import logging
import re
import subprocess
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.kernel.audit import event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast
from portal.kernel.models import Phase, Severity

from .choices import FenceAgent, HostStatus
from .high_availability import host_vms_released
from .models import Host

log = logging.getLogger(__name__)

AGENT_PATHS = {FenceAgent.IPMILAN: "/usr/sbin/fence_ipmilan"}
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
VALUE_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# The options an administrator may give, as fence_ipmilan's stdin names them: value pattern
# (None: a flag, "1" or "0").
OPTIONS = {
    "lanplus": None,
    "ipport": re.compile(r"^\d{1,5}$"),
    "cipher": re.compile(r"^\d{1,2}$"),
    "privlvl": re.compile(r"^(callback|user|operator|administrator)$"),
    "auth": re.compile(r"^(md5|password|none)$"),
    "method": re.compile(r"^(onoff|cycle)$"),
    "power_wait": re.compile(r"^\d{1,3}$"),
    "power_timeout": re.compile(r"^\d{1,3}$"),
    "login_timeout": re.compile(r"^\d{1,3}$"),
    "shell_timeout": re.compile(r"^\d{1,3}$"),
    "ipmitool_timeout": re.compile(r"^\d{1,3}$"),
    "retry_on": re.compile(r"^\d{1,2}$"),
    "delay": re.compile(r"^\d{1,3}$"),
    "hexadecimal_kg": re.compile(r"^[0-9A-Fa-f]{1,40}$"),
}
PASSWORD_MAX = 255
STATUS_OFF = 2  # fence-agents' exit status of `status` for a machine that is off


@dataclass(frozen=True)
class PowerManagement:
    """A host's fence agent settings, checked."""

    agent: str
    address: str
    user: str
    password: str
    options: tuple[tuple[str, str], ...] = ()


def address_check(address: str) -> str:
    """The fence device's address: an IPv4 or IPv6 address or a host name."""
    address = (address or "").strip()
    if not address:
        raise ActionRefused("Address is required when Power Management is enabled.")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if not HOSTNAME_RE.match(address):
        raise ActionRefused(
            "Address must be an IP address or a host name (letters, digits, '-' and '.')."
        )
    return address


def options_parse(text: str) -> tuple[tuple[str, str], ...]:
    """'lanplus=1, ipport=623' -> (("lanplus", "1"), ("ipport", "623")): only known options,
    each once, with a value of its own pattern."""
    parsed: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip().replace("-", "_"), value.strip()
        if name not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise ActionRefused(f"Unknown Power Management option {name[:40]!r}; known: {known}.")
        if name in parsed:
            raise ActionRefused(f"Power Management option {name} is given twice.")
        pattern = OPTIONS[name]
        if pattern is None:
            value = value if sep else "1"
            if value not in ("0", "1"):
                raise ActionRefused(f"Power Management option {name} takes 1 or 0.")
        elif not VALUE_RE.match(value) or not pattern.match(value):
            raise ActionRefused(f"Power Management option {name} has an invalid value.")
        if name == "ipport" and not 1 <= int(value) <= 65535:
            raise ActionRefused("Power Management option ipport must be a port, 1 to 65535.")
        parsed[name] = value
    return tuple(parsed.items())


def options_text(options: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options)


def power_management_check(
    *, agent: str, address: str, user: str, password: str, options: str
) -> PowerManagement:
    """Check what Edit Host's Power Management tab was given (enabled)."""
    if agent not in AGENT_PATHS:
        raise ActionRefused("Choose a fence agent Type from the list.")
    address = address_check(address)
    user = (user or "").strip()
    if not USER_RE.match(user):
        raise ActionRefused(
            "User Name is required: at most 64 letters, digits, '.', '_', '@' and '-'."
        )
    if not password:
        raise ActionRefused("Password is required when Power Management is enabled.")
    if len(password) > PASSWORD_MAX:
        raise ActionRefused(f"Password is too long: at most {PASSWORD_MAX} characters.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
        raise ActionRefused("Password may not contain control characters or line breaks.")
    return PowerManagement(agent, address, user, password, options_parse(options))


def host_power_management(host: Host) -> PowerManagement:
    """The host's stored settings, checked again before use (ActionRefused if they are not
    valid any more)."""
    return power_management_check(
        agent=host.pm_agent,
        address=host.pm_address,
        user=host.pm_user,
        password=host.pm_password,
        options=host.pm_options,
    )


def agent_input(pm: PowerManagement, action: str) -> str:
    """The agent's standard input: one `name=value` line each (no value holds a line break:
    they were checked)."""
    if action not in ("off", "on", "status", "reboot"):
        raise ValueError(action)
    lines = [
        f"action={action}",
        f"ip={pm.address}",
        f"username={pm.user}",
        f"password={pm.password}",
        *(f"{name}={value}" for name, value in pm.options),
    ]
    return "\n".join(lines) + "\n"


def agent_command(pm: PowerManagement) -> list[str]:
    """The agent's argument vector: the program alone (every setting goes on stdin)."""
    return [AGENT_PATHS[pm.agent]]


@dataclass(frozen=True)
class AgentResult:
    status: int
    output: str  # stdout and stderr, the password scrubbed


def agent_run(pm: PowerManagement, action: str, *, timeout: float | None = None) -> AgentResult:
    """Run the fence agent once (no shell; settings on stdin). A program that cannot be
    started, or overruns `timeout`, is an AgentResult with status -1 and why."""
    timeout = settings.VIREO_FENCE_TIMEOUT_SECONDS if timeout is None else timeout
    try:
        done = subprocess.run(
            agent_command(pm),
            input=agent_input(pm, action),
            capture_output=True,
            text=True,
            timeout=timeout,
            shell=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
    except FileNotFoundError:
        return AgentResult(-1, f"{AGENT_PATHS[pm.agent]} is not installed (package fence-agents).")
    except subprocess.TimeoutExpired:
        return AgentResult(-1, f"the fence agent did not finish within {timeout:g} seconds.")
    output = "\n".join(
        line
        for line in (done.stdout + "\n" + done.stderr).splitlines()
        if line.strip() and "DeprecationWarning" not in line and "from pipes import" not in line
    )
    return AgentResult(done.returncode, _scrub(output, pm.password)[-1500:])


def _scrub(text: str, password: str) -> str:
    return text.replace(password, "********") if password else text


def host_fence(host_id: int) -> bool:
    """Fence a Non Responsive host with its power management: `off`, then `status` must say
    off. On success its VMs are Down and the Highly Available ones queued for a restart; on
    failure the host stays Non Responsive and its VMs Unknown. Events either way."""
    now = timezone.now()
    with transaction.atomic():
        host = (
            Host.objects.select_for_update()
            .select_related("cluster")
            .filter(pk=host_id, status=HostStatus.NON_RESPONSIVE, pm_enabled=True)
            .first()
        )
        if host is None or host.fenced_at is not None:
            return False
        Host.objects.filter(pk=host.pk).update(fence_tried_at=now)
    try:
        pm = host_power_management(host)
    except ActionRefused as exc:
        _fence_failed(host, f"its Power Management settings are not valid: {exc}")
        return False
    event_record(
        action="host_fence",
        phase=Phase.STARTED,
        host=host,
        cluster=host.cluster,
        object_type="host",
        object_name=host.name,
        severity=Severity.WARNING,
        message=f"Host {host.name} is Non Responsive: fencing it (power off) through its "
        f"power management ({pm.agent} at {pm.address}).",
    )
    off = agent_run(pm, "off")
    if off.status != 0:
        _fence_failed(host, f"power off failed (exit status {off.status}): {off.output}")
        return False
    status = agent_run(pm, "status")
    if status.status != STATUS_OFF:
        _fence_failed(
            host,
            f"its power status is not off after the power off (exit status "
            f"{status.status}): {status.output}",
        )
        return False
    with transaction.atomic():
        locked = Host.objects.select_for_update().filter(pk=host.pk).first()
        if locked is None or locked.status != HostStatus.NON_RESPONSIVE:
            return False  # it answered meanwhile: its VMs are what it says
        Host.objects.filter(pk=host.pk).update(fenced_at=timezone.now())
        event_record(
            action="host_fence",
            phase=Phase.SUCCEEDED,
            host=host,
            cluster=host.cluster,
            object_type="host",
            object_name=host.name,
            severity=Severity.WARNING,
            message=f"Host {host.name} was fenced: its power management reports it off. Its "
            "virtual machines are Down and the Highly Available ones are restarted elsewhere.",
        )
        host_vms_released(host, why=f"host {host.name} was fenced (powered off)")
        broadcast("hosts", f"host.{host.pk}", "vms")
    return True


def _fence_failed(host: Host, why: str) -> None:
    log.warning("fencing host %s failed: %s", host.name, why)
    event_record(
        action="host_fence",
        phase=Phase.FAILED,
        host=host,
        cluster=host.cluster,
        object_type="host",
        object_name=host.name,
        error=why,
        message=f"Failed to fence host {host.name}: {why} It stays Non Responsive and its "
        "virtual machines Unknown; fencing is tried again later, or use Confirm 'Host has "
        "been Rebooted' once you know it is down."[:1000],
    )
    broadcast("hosts", f"host.{host.pk}")


def hosts_to_fence(retry_seconds: float | None = None) -> list[int]:
    """Non Responsive hosts with power management, not fenced yet, not tried lately."""
    retry = settings.VIREO_FENCE_RETRY_SECONDS if retry_seconds is None else retry_seconds
    cutoff = timezone.now() - timedelta(seconds=retry)
    hosts = Host.objects.filter(
        status=HostStatus.NON_RESPONSIVE, pm_enabled=True, fenced_at__isnull=True
    ).exclude(fence_tried_at__gt=cutoff)
    return list(hosts.values_list("pk", flat=True))
