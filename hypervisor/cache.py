"""The process's libvirt connections: the event loop thread and one shared Connection per URI.

connect() picks the class from the URI: TestDriverConnection for libvirt's test driver
(test:///..., also over a transport: test+unix://...), Connection for every other driver.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from urllib.parse import urlsplit

import libvirt

from hypervisor.connection import Connection
from hypervisor.testdriver import TestDriverConnection

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_registered = False
_loop_thread: threading.Thread | None = None
_cache_lock = threading.Lock()
_connections: dict[str, Connection] = {}
_uri_locks: dict[str, threading.Lock] = {}
_inherited: list[Connection] = []  # a parent's connections, kept (never closed) after a fork
# Seconds a connection attempt may take before the host counts as not answering.
CONNECT_TIMEOUT = 30.0


def start_event_loop() -> None:
    """Register libvirt's default event loop once and run it in a daemon thread."""
    global _loop_registered, _loop_thread
    with _loop_lock:
        if not _loop_registered:
            libvirt.virEventRegisterDefaultImpl()
            _loop_registered = True
        if _loop_thread is None:
            _loop_thread = threading.Thread(
                target=_run_event_loop, name="libvirt-events", daemon=True
            )
            _loop_thread.start()


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # the loop must outlive any error
            log.exception("libvirt event loop iteration failed")
            time.sleep(0.1)


def _after_fork_in_child() -> None:
    """Give a forked child its own connections: its parent's sockets are not its to use.

    The inherited connections are set aside untouched (closing them would talk on the parent's
    sockets). Calls work in the child, but libvirt's event loop does not survive a fork once it
    ran: a child of a process that called connect() gets no events (and no keepalive).
    """
    global _loop_lock, _cache_lock, _loop_thread
    if _loop_thread is not None:
        log.warning("forked after the libvirt event loop started: no events in this process")
    _loop_lock, _cache_lock, _loop_thread = threading.Lock(), threading.Lock(), None
    _inherited.extend(_connections.values())
    _connections.clear()
    _uri_locks.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def connection_class(uri: str) -> type[Connection]:
    """The Connection class for `uri`: TestDriverConnection for libvirt's test driver."""
    driver = urlsplit(uri).scheme.partition("+")[0]
    return TestDriverConnection if driver == "test" else Connection


def connect(uri: str, *, timeout: float | None = None) -> Connection:
    """The process-wide shared Connection for `uri`, opened (or reopened if dead) on demand.

    Opening gives up after `timeout` seconds (CONNECT_TIMEOUT by default) with HostUnreachable."""
    start_event_loop()
    with _cache_lock:
        uri_lock = _uri_locks.setdefault(uri, threading.Lock())
    with uri_lock:
        conn = _connections.get(uri)
        if conn is not None and conn.is_alive():
            return conn
        if conn is not None:
            conn.close()
        cls = connection_class(uri)
        conn = cls(uri, timeout=CONNECT_TIMEOUT if timeout is None else timeout)
        with _cache_lock:
            _connections[uri] = conn
        return conn


def disconnect(uri: str) -> None:
    """Close and forget the cached connection for `uri`, if any."""
    with _cache_lock:
        conn = _connections.pop(uri, None)
    if conn is not None:
        conn.close()


def disconnect_all() -> None:
    """Close and forget every cached connection."""
    with _cache_lock:
        uris = list(_connections)
    for uri in uris:
        disconnect(uri)
