"""Small statistics for the report."""

import math
import statistics


def percentile(values, pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds) -> dict[str, float]:
    """median, p95, min and max of durations given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "median": statistics.median(ms) if ms else math.nan,
        "p95": percentile(ms, 95),
        "min": min(ms, default=math.nan),
        "max": max(ms, default=math.nan),
    }


def fmt_ms(s: dict[str, float]) -> str:
    return (
        f"median {s['median']:.1f} ms, p95 {s['p95']:.1f} ms "
        f"(min {s['min']:.1f}, max {s['max']:.1f}, n={s['n']})"
    )
