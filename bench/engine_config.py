"""engine-config's read: what `config_get` costs from the per-process copy, what re-reading
the table costs (once per CONFIG_TTL_SECONDS per process), and the time until another
process's write is seen."""

import statistics
import time


def measure(calls: int = 100_000, refreshes: int = 1_000) -> dict:
    from portal.kernel import config
    from portal.kernel.models import ConfigValue

    for key in ("MaxNumberOfConcurrentMigrations", "AutoConvergence", "MigrationPolicy"):
        config.config_set(key, config.KEYS[key].default, user=None)
    config.config_reset_cache()
    config.config_get("MaxNumberOfConcurrentMigrations")
    started = time.perf_counter()
    for _ in range(calls):
        config.config_get("MaxNumberOfConcurrentMigrations")
    cached_us = (time.perf_counter() - started) / calls * 1e6

    samples = []
    for _ in range(refreshes):
        config.config_reset_cache()
        t = time.perf_counter()
        config.config_get("MaxNumberOfConcurrentMigrations")
        samples.append((time.perf_counter() - t) * 1000)

    # Another process's write (a row changed behind this process's copy): seen when?
    config.config_reset_cache()
    config.config_get("AutoConvergence")
    ConfigValue.objects.filter(key="AutoConvergence").update(value=True)
    written = time.perf_counter()
    while config.config_get("AutoConvergence") is not True:
        time.sleep(0.01)
    seen_s = time.perf_counter() - written
    ConfigValue.objects.filter(key="AutoConvergence").update(value=False)
    return {
        "calls": calls,
        "cached_us": cached_us,
        "refresh_ms": {
            "median": statistics.median(samples),
            "p95": sorted(samples)[int(len(samples) * 0.95) - 1],
        },
        "ttl_s": config.CONFIG_TTL_SECONDS,
        "seen_s": seen_s,
    }
