"""The one exception family of the hypervisor layer, and the libvirt error conversion."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import libvirt

# A failure with one of these codes always means the host cannot be talked to.
_UNREACHABLE_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_INVALID_CONN,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)
# These codes mean "unreachable" only when they come from the transport or the connection died:
# a local SYSTEM_ERROR (say, a missing disk file) is an ordinary failure of the operation.
_MAYBE_UNREACHABLE_CODES = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_OPERATION_INVALID,
    }
)
_TRANSPORT_DOMAINS = frozenset({libvirt.VIR_FROM_REMOTE, libvirt.VIR_FROM_RPC})


class HypervisorError(Exception):
    """A failure reported by libvirt; `message` is libvirt's own text, `code` its error code."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class HostUnreachable(HypervisorError):
    """The connection to the host could not be opened, or was lost."""


class DomainNotFound(HypervisorError):
    """No domain with that uuid exists on the host."""


class VolumeNotFound(HypervisorError):
    """No volume with that name exists in the pool."""


class PoolNotFound(HypervisorError):
    """No storage pool with that name exists on the host."""


class MigrationCancelled(HypervisorError):
    """The migration was aborted on request; the guest runs on on the source host."""


class NetworkNotFound(HypervisorError):
    """No libvirt network with that name exists on the host."""


_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN: DomainNotFound,
    libvirt.VIR_ERR_NO_STORAGE_VOL: VolumeNotFound,
    libvirt.VIR_ERR_NO_STORAGE_POOL: PoolNotFound,
    libvirt.VIR_ERR_NO_NETWORK: NetworkNotFound,
}


# libxml2 quotes the offending line of a document it cannot parse, and a caret under the
# spot: "file:1: Start tag expected\n<the file's line>\n^". That line may be any local file's
# content (a test:/// URI names a file), so it never goes into a message.
_QUOTED_SOURCE = re.compile(r"\n[^\n]*\n[ \t~-]*\^[ \t]*(?=\n|$)")


def message_for_users(message: str) -> str:
    """libvirt's text without the source lines libxml2 quotes from documents it parsed."""
    return _QUOTED_SOURCE.sub("", message).strip()


def convert(
    err: libvirt.libvirtError, *, alive: Callable[[], bool] | None = None
) -> HypervisorError:
    """Turn a libvirtError into the matching HypervisorError; `alive` tells if the link still
    holds. The message never quotes the content of a file libvirt read."""
    message = message_for_users(err.get_error_message() or str(err))
    code = err.get_error_code()
    if code in _NOT_FOUND:
        return _NOT_FOUND[code](message, code)
    if code in _UNREACHABLE_CODES:
        return HostUnreachable(message, code)
    if code in _MAYBE_UNREACHABLE_CODES:
        if err.get_error_domain() in _TRANSPORT_DOMAINS or (alive is not None and not alive()):
            return HostUnreachable(message, code)
    return HypervisorError(message, code)


@contextmanager
def translated(
    alive: Callable[[], bool] | None = None, *, as_type: type[HypervisorError] | None = None
) -> Iterator[None]:
    """Re-raise any libvirtError inside the block as a HypervisorError (or as `as_type`)."""
    try:
        yield
    except libvirt.libvirtError as err:
        converted = convert(err, alive=alive)
        if as_type is not None and not isinstance(converted, as_type):
            converted = as_type(converted.message, converted.code)
        raise converted from err
