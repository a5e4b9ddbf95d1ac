"""Live migration of a running domain to another host, peer-to-peer, with progress and cancel.

The source libvirtd connects to the destination itself (`dest_uri`, the destination host's
URI as Vireo knows it), defines the domain there and undefines it here (PERSIST_DEST,
UNDEFINE_SOURCE). `migrateToURI3` blocks until the end, so it runs on a thread of its own
while the caller's thread reads libvirt's job statistics every `poll` seconds, hands them to
`progress`, applies the policy's steps (downtime raised per iteration, a switch to post-copy,
or pausing the guest when it does not converge) and aborts the libvirt job when
`should_abort()` says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.datatypes import MigrationOptions, MigrationProgress, MigrationResult
from hypervisor.errors import HypervisorError, MigrationCancelled, translated

MIB = 1024 * 1024


def _flags(options: MigrationOptions) -> int:
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    )
    if options.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if options.compression:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
    if options.post_copy_after is not None:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def _params(options: MigrationOptions) -> dict:
    params: dict = {}
    if options.migrate_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = options.migrate_uri
    if options.bandwidth_mbps is not None:  # libvirt counts MiB/s
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = max(
            1, options.bandwidth_mbps * 1_000_000 // 8 // MIB
        )
    if options.compression:
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = list(options.compression)
    return params


def _reading(stats: dict, post_copy: bool, paused: bool) -> MigrationProgress:
    return MigrationProgress(
        data_total=int(stats.get("memory_total", stats.get("data_total", 0)) or 0),
        data_processed=int(stats.get("memory_processed", stats.get("data_processed", 0)) or 0),
        data_remaining=int(stats.get("memory_remaining", stats.get("data_remaining", 0)) or 0),
        iteration=int(stats.get("memory_iteration", 0) or 0),
        elapsed_ms=int(stats.get("time_elapsed", 0) or 0),
        post_copy=post_copy,
        paused=paused,
    )


class MigrationMixin(ConnectionBase):
    def migration_capable(self) -> dict[str, bool]:
        """What this host's libvirt offers for migration: compression and post-copy."""
        return {
            "compression": hasattr(libvirt, "VIR_MIGRATE_PARAM_COMPRESSION"),
            "post_copy": hasattr(libvirt, "VIR_MIGRATE_POSTCOPY"),
        }

    def migrate(
        self,
        uuid: str,
        dest_uri: str,
        options: MigrationOptions,
        *,
        progress: Callable[[MigrationProgress], None] | None = None,
        should_abort: Callable[[], bool] | None = None,
        poll: float = 0.5,
    ) -> MigrationResult:
        """Migrate the running domain `uuid` live to the host at `dest_uri`; returns when it
        runs there. Raises MigrationCancelled when `should_abort()` turned true and the job
        was aborted (the guest runs on here), HypervisorError on any other failure."""
        dom = self._domain(uuid)
        outcome: dict[str, BaseException | None] = {"error": None}
        flags, params = _flags(options), _params(options)

        def run() -> None:
            try:
                dom.migrateToURI3(dest_uri, params, flags)
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc

        started = time.monotonic()
        worker = threading.Thread(target=run, name=f"migrate-{uuid[:8]}", daemon=True)
        worker.start()
        steps: list[str] = []
        downtime_set: int | None = None
        post_copy = paused = aborted = False
        last = MigrationProgress()
        while True:
            worker.join(poll)
            if not worker.is_alive():
                break
            try:
                stats = dom.jobStats()
            except libvirt.libvirtError:
                continue  # the job is starting or just ended
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                continue
            last = _reading(stats, post_copy, paused)
            if should_abort is not None and not aborted and should_abort():
                aborted = True
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass  # it ended meanwhile
                continue
            if options.downtime_steps:
                wanted = options.downtime_steps[
                    min(max(last.iteration - 1, 0), len(options.downtime_steps) - 1)
                ]
                if wanted != downtime_set:
                    try:
                        dom.migrateSetMaxDowntime(wanted, 0)
                        downtime_set = wanted
                        steps.append(f"maximum downtime {wanted} ms")
                    except libvirt.libvirtError:
                        pass
            after = options.post_copy_after
            if after is not None and not post_copy and last.iteration >= after:
                try:
                    dom.migrateStartPostCopy(0)
                    post_copy = True
                    steps.append(f"switched to post-copy at iteration {last.iteration}")
                except libvirt.libvirtError:
                    pass
            pause = options.pause_after
            if pause is not None and not paused and last.iteration >= pause:
                try:
                    dom.suspend()
                    paused = True
                    steps.append(f"guest paused at iteration {last.iteration} to converge")
                except libvirt.libvirtError:
                    pass
            if progress is not None:
                progress(last)
        error = outcome["error"]
        if error is not None:
            if aborted:
                raise MigrationCancelled("The migration was cancelled.") from error
            if isinstance(error, libvirt.libvirtError):
                with translated(self.is_alive):
                    raise error
            raise HypervisorError(str(error)) from error
        duration = time.monotonic() - started
        return MigrationResult(
            duration_s=duration,
            downtime_ms=None,
            iterations=last.iteration,
            paused=paused,
            steps=tuple(steps),
        )

    def migration_downtime(self, uuid: str) -> int | None:
        """The downtime (ms) of the last completed migration of domain `uuid`, as this host
        (the destination) recorded it; None when libvirt did not."""
        dom = self._domain(uuid)
        try:
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            return None
        value = stats.get("downtime")
        return int(value) if value is not None else None
