"""Checks of what an administrator types for a storage domain: a host directory, an NFS
server and export path. They go into libvirt pool definitions on every host, so they are
refused unless plainly what they claim to be (the XML is built with ElementTree besides)."""

import ipaddress
import re

from portal.kernel.errors import ActionRefused

PATH_MAX = 1024
# One path component: letters, digits and . _ - + @ , = : ~ (no spaces, quotes, shell or
# glob characters, no control characters).
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9._+@,=:~-]+$")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Directories a Local on Host domain may not be (nor lie under): a pool's volumes are every
# file in its directory, and Remove with Format Domain deletes them.
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/root")
SYSTEM_DIRS += ("/sbin", "/sys", "/usr")
SYSTEM_EXACT = frozenset({"/", "/home", "/mnt", "/opt", "/run", "/srv", "/tmp", "/var", "/var/lib"})


def _path(value, label: str) -> str:
    path = str(value or "").strip()
    if not path:
        raise ActionRefused(f"{label} is required.")
    if len(path) > PATH_MAX:
        raise ActionRefused(f"{label} is too long: {len(path):,} characters, at most {PATH_MAX:,}.")
    if not path.startswith("/"):
        raise ActionRefused(f"{label} must be an absolute path, starting with '/'.")
    if len(path) > 1:
        path = path.rstrip("/")
    components = path.split("/")[1:]
    if path != "/" and any(c == "" for c in components):
        raise ActionRefused(f"{label} may not contain '//'.")
    if any(c in (".", "..") for c in components):
        raise ActionRefused(f"{label} may not contain '.' or '..' components.")
    if path != "/" and not all(_COMPONENT_RE.match(c) for c in components):
        raise ActionRefused(
            f"{label} may contain only letters, digits, '/' and . _ - + @ , = : ~ "
            "(no spaces or other characters)."
        )
    return path


def local_path_check(value) -> str:
    """A host directory for a Local on Host domain, normalised (no trailing '/')."""
    path = _path(value, "Path")
    if path in SYSTEM_EXACT or any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS):
        raise ActionRefused(
            f"Path {path} is a system directory; choose a directory of its own for the domain "
            "(such as /var/lib/vireo/data1)."
        )
    return path


def export_path_check(value) -> str:
    """The exported directory on the NFS server, normalised."""
    return _path(value, "Export Path")


def nfs_server_check(value) -> str:
    """The NFS server: a host name or an IPv4 / IPv6 address."""
    server = str(value or "").strip()
    if not server:
        raise ActionRefused("NFS server is required.")
    try:
        return str(ipaddress.ip_address(server))
    except ValueError:
        pass
    name = server[:-1] if server.endswith(".") else server
    if len(name) > 253 or not all(_HOST_LABEL_RE.match(label) for label in name.split(".")):
        raise ActionRefused(
            "NFS server must be a host name (letters, digits, '-' and '.') or an IP address."
        )
    return name.lower()
