"""Part 1: the first page of the VM list (`/vms/` and the htmx partial `/vms/table/`)."""

import cProfile
import io
import pstats
import time
from contextlib import contextmanager

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from .stats import summary_ms

PAGES = {
    "/vms/ (full page)": ("/vms/", {}),
    "/vms/table/ (htmx)": ("/vms/table/", {"HTTP_HX_REQUEST": "true"}),
}
MAX_QUERIES = 10
MEDIAN_GOAL_MS = 50.0


@contextmanager
def sql_timer(totals: list[float]):
    """Adds the time spent executing SQL inside the block to totals[0]."""

    def wrapper(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            totals[0] += time.perf_counter() - started

    with connection.execute_wrapper(wrapper):
        yield


@contextmanager
def query_timer(times: list[float]):
    """Appends each SQL statement's execution time in the block to `times`."""

    def wrapper(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            times.append(time.perf_counter() - started)

    with connection.execute_wrapper(wrapper):
        yield


def _get(client: Client, path: str, headers: dict, expect: str):
    response = client.get(path, **headers)
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}")
    if expect and expect.encode() not in response.content:
        raise RuntimeError(f"{path} does not show {expect!r}")
    return response


def profile(client: Client, path: str, headers: dict, expect: str, runs: int = 10) -> str:
    """cProfile of `runs` requests: the top functions by own time and by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(runs):
        _get(client, path, headers, expect)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    out.write(f"--- cProfile of {runs} requests to {path}: by own time ---\n")
    stats.sort_stats("tottime").print_stats(15)
    out.write("--- by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def explain(sql: str) -> str:
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cur.fetchall())


def measure(user, *, requests: int = 50, expect: str = "") -> dict:
    """Query count and server-time figures for each page; profiles a page over goal."""
    client = Client()
    client.force_login(user)
    results = {}
    for label, (path, headers) in PAGES.items():
        for _ in range(5):  # warm-up: template loading, URL resolver, first connection
            _get(client, path, headers, expect)
        times: list[float] = []
        with CaptureQueriesContext(connection) as ctx, query_timer(times):
            _get(client, path, headers, expect)
        queries = [(q["sql"], t) for q, t in zip(ctx.captured_queries, times, strict=True)]
        durations, sql_seconds = [], []
        for _ in range(requests):
            totals = [0.0]
            with sql_timer(totals):
                started = time.perf_counter()
                _get(client, path, headers, expect)
                durations.append(time.perf_counter() - started)
            sql_seconds.append(totals[0])
        timing = summary_ms(durations)
        result = {
            "path": path,
            "queries": queries,
            "timing": timing,
            "sql": summary_ms(sql_seconds),
            "over_goal": timing["median"] > MEDIAN_GOAL_MS or len(queries) > MAX_QUERIES,
        }
        if result["over_goal"]:
            result["profile"] = profile(client, path, headers, expect)
            slowest = max(queries, key=lambda q: q[1])[0]
            result["explain"] = explain(slowest)
        results[label] = result
    return results
