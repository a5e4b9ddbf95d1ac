"""Vireo benchmarks: the VM list at 10,000 VMs (superuser and delegated user), websocket
latency, one worker's throughput, adopted domains, ISO upload, the console's key-press round
trip, live migration (Maintenance of 200 VMs; downtime on the real pair).

Run with `make bench` (or DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/run.py).
Uses its own database (vireo_bench, dropped at the end), Redis db 6 and a temporary VAR_DIR.
"""

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path.pop(0)
sys.path.insert(0, str(REPO))

from bench.env import BenchEnv  # noqa: E402
from bench.stats import fmt_ms  # noqa: E402

PARTS = (
    "list",
    "delegated",
    "live",
    "shutdown",
    "adopt",
    "config",
    "schedule",
    "affinity",
    "balance",
    "agents",
    "iso",
    "console",
    "evacuation",
    "downtime",
)
LIST_QUERIES_GOAL = 10
LIST_MEDIAN_GOAL_MS = 50.0
DELEGATED_RATIO_GOAL = 1.5
LIVE_P95_GOAL_MS = 300.0
SHUTDOWN_JOBS_PER_S_GOAL = 50.0
ADOPT_SLOWDOWN_GOAL = 1.2  # a poll and the VM list with 1,000 adopted domains vs 1,000 of Vireo's
AGENTS_SLOWDOWN_GOAL = 1.2  # a poll and the VM list with 1,000 guest agent reports vs none
ISO_GROWTH_GOAL_MIB = 64.0  # the web process's peak RSS growth while a 1 GiB ISO uploads
CONSOLE_MEDIAN_GOAL_MS = 100.0  # key press to screen change through Vireo's console websocket
AFFINITY_MEDIAN_GOAL_MS = 50.0  # schedule() among 100 hosts, 10,000 VMs, 50 affinity groups
EVACUATION_POLL_SECONDS = 0.5  # the monitor's poll interval in the evacuation part


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def part_list(user) -> dict:
    from bench import vm_list

    heading("1. VM list, first page, 10,000 VMs")
    results = vm_list.measure(user, requests=50, expect="bench-vm00049")
    for label, r in results.items():
        print(f"{label}: {len(r['queries'])} queries; server time {fmt_ms(r['timing'])}")
        print(f"    of which SQL: {fmt_ms(r['sql'])}")
        for sql, seconds in r["queries"]:
            print(f"    [{seconds * 1000:5.2f} ms] {sql[:150]}")
        if r.get("profile"):
            print(r["profile"])
            print("--- EXPLAIN ANALYZE of the slowest query ---")
            print(r["explain"])
    return results


def part_delegated(user, delegation) -> dict:
    from bench import delegated

    d = delegation
    heading("1b. VM list, first page, as a delegated user (next to the superuser)")
    print(
        f"bench-delegate: ClusterAdmin on {d.cluster.name} ({d.cluster_vms} VMs), UserRole on "
        f"{d.single_vms} single VMs, DataCenterAdmin on {d.data_center.name} "
        f"({d.data_center_vms} VMs): sees {d.visible} of 10,000 VMs through {d.grant_rows} "
        f"guardian rows (granted in {d.seconds:.1f} s)"
    )
    results = delegated.measure(user, d, requests=50)
    for label, r in results.items():
        su, de = r["superuser"], r["delegated"]
        print(f"{label}:")
        for who, x in (("superuser", su), ("delegated", de)):
            print(
                f"    {who:9} {len(x['queries']):2d} queries; server time {fmt_ms(x['timing'])}; "
                f"SQL median {x['sql']['median']:.1f} ms"
            )
        print(
            f"    ratio of medians delegated/superuser: {r['ratio']:.2f} "
            f"(goal <= {DELEGATED_RATIO_GOAL}); queries touching guardian's tables: "
            f"{r['permission_queries']}; listing filtered on id lists, no guardian join: "
            f"{'yes' if r['listing_on_id_lists'] else 'NO'}"
        )
        if label.startswith("/vms/table/"):
            print("    queries of the delegated user's table request:")
            for sql, seconds in de["queries"]:
                kind = delegated.tag(sql)
                text = sql if kind.startswith("VM page") else sql[:150]
                print(f"    [{seconds * 1000:5.2f} ms]{f' <{kind}>' if kind else ''} {text}")
        if r.get("breakdown"):
            print("    where the time goes (median ms: total = SQL + Python):")
            for step, su_ms, de_ms in r["breakdown"]:
                print(
                    f"      {step:26} superuser {su_ms['total']:6.1f} = {su_ms['sql']:5.1f} + "
                    f"{su_ms['total'] - su_ms['sql']:5.1f}   delegated {de_ms['total']:6.1f} = "
                    f"{de_ms['sql']:5.1f} + {de_ms['total'] - de_ms['sql']:5.1f}"
                )
        for kind, plan in (r.get("explain") or {}).items():
            print(f"--- EXPLAIN ANALYZE of the delegated {kind} query ---")
            print(plan)
    return results


def part_live(user, env: BenchEnv) -> dict:
    from bench import live

    heading("2. Websocket latency: hypervisor change -> message in the browser")
    r = live.measure(user, env.environ(), env.var_dir, REPO, rounds=100)
    print(f"daphne listening after {r['daphne_start_s']:.1f} s")
    print(f"test hosts' node files written up front (101 hosts): {r['node_files_s']:.1f} s")
    print(f"monitor's first poll (101 hosts, connections): {r['first_poll_s']:.1f} s")
    print(
        f"monitor poll cycles during the run: {r['cycle_count']}, {fmt_ms(r['cycles'])} "
        f"(poll interval {r['poll_seconds']:.0f} s)"
    )
    print(f"latency over {r['rounds']} pause/resume rounds: {fmt_ms(r['latency'])}")
    print(
        f"rounds over 300 ms: {r['over_300ms']}; rounds with no message within 10 s: {r['misses']}"
    )
    return r


def _split_line(split: dict) -> str:
    return (
        f"    per job: {split['total_ms_per_job']:.1f} ms = "
        f"live updates ({split['live_calls_per_job']:.1f} publishes for "
        f"{split['send_calls_per_job']:.1f} send_now) "
        f"{split['live_ms_per_job']:.1f} ms + SQL (x {split['sql_calls_per_job']:.1f}) "
        f"{split['sql_ms_per_job']:.1f} ms + the rest (RQ, libvirt, Python) "
        f"{split['other_ms_per_job']:.1f} ms; Redis round trips "
        f"{split['redis_calls_per_job']:.1f}"
    )


def part_shutdown(user) -> dict:
    from bench import shutdown

    heading("3. One worker shuts down 500 VMs (5 test-driver hosts)")
    r = shutdown.measure(user, vms=500, hosts=5)
    print(
        f"vm_shutdown x {r['vms']} (the service calls, enqueue on commit): {r['enqueue_s']:.1f} s "
        f"({r['vms'] / r['enqueue_s']:.0f}/s), {r['queued']} jobs queued"
    )
    print(_split_line(r["enqueue_split"]))
    print(
        f"one ThreadWorker burst: {r['work_s']:.1f} s for {r['jobs_ended']} jobs "
        f"= {r['jobs_per_s']:.1f} jobs/s ({r['succeeded']} succeeded, {r['failed']} failed, "
        f"{r['left_in_queue']} left in the queue)"
    )
    print(_split_line(r["work_split"]))
    print(f"VM statuses after: {r['vm_statuses']}; Job rows: {r['job_statuses']}")
    print(f"domain states on the hosts: {r['domain_states']}")
    print(f"all {r['vms']} VMs Down: {'yes' if r['all_down'] else 'NO'}")
    r["live_cost"] = cost = shutdown.live_cost()
    print(
        f"one live update (3 topics), median of 200: {cost['publisher']:.2f} ms through the "
        f"process's publisher, {cost['own_loop']:.2f} ms with an event loop and connection of its "
        "own (the way before)"
    )
    return r


def part_adopt(user) -> dict:
    from bench import adopt

    heading("4. A host already running 1,000 domains Vireo did not define")
    r = adopt.measure(user, domains=1000)
    print(
        f"first poll adopts {r['adopted']} domains ({r['disks_mapped']} disks mapped to the "
        f"storage domain): {r['adopt_s']:.1f} s"
    )
    print(
        f"steady poll of the host: {r['poll_vireo_ms']:.0f} ms with 1,000 Vireo VMs, "
        f"{r['poll_external_ms']:.0f} ms with 1,000 external VMs"
    )
    print(
        f"VM list first page: {r['list_vireo_ms']:.1f} ms ({r['list_vireo_queries']} queries) "
        f"before, {r['list_external_ms']:.1f} ms ({r['list_external_queries']} queries) after"
    )
    return r


def part_config() -> dict:
    from bench import engine_config

    heading("5. engine-config: config_get from the per-process copy, and a write seen elsewhere")
    r = engine_config.measure()
    print(f"config_get from the copy: {r['cached_us']:.2f} us per call ({r['calls']:,} calls)")
    print(
        f"re-reading the table (once per {r['ttl_s']:.0f} s per process): median "
        f"{r['refresh_ms']['median']:.2f} ms, p95 {r['refresh_ms']['p95']:.2f} ms"
    )
    print(f"a value written behind this process's copy was read after {r['seen_s']:.2f} s")
    return r


def part_schedule() -> dict:
    from bench import scheduling

    heading("6. The scheduler: one Run placement among 100 hosts, 2,000 VMs")
    r = scheduling.measure()
    print(
        f"schedule() over {r['hosts']} hosts ({r['vms']:,} VMs): {r['queries']} queries, "
        f"median {r['median_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms; chose {r['chosen']}"
    )
    print(f"    of which reading the 100 hosts with their committed memory: {r['read_ms']:.1f} ms")
    return r


def part_affinity() -> dict:
    from bench import affinity

    heading("6b. The scheduler with 50 affinity groups: 100 hosts, 10,000 VMs")
    r = affinity.measure()
    print(
        f"{r['groups']} groups ({r['links']} VM memberships); the VM is in {r['vm_groups']} of "
        f"them with {r['members']} other running members"
    )
    print(
        f"schedule() over {r['hosts']} hosts ({r['vms']:,} VMs): {r['queries']} queries, "
        f"median {r['median_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms; chose {r['chosen']}"
    )
    print(
        f"    a VM in no group, in turn: {r['before_queries']} queries, median "
        f"{r['before_median_ms']:.1f} ms; reading the VM's groups: {r['read_ms']:.1f} ms"
    )
    print(
        f"    this process's CPU per call (Python, the load aside): {r['cpu_ms']:.1f} ms, "
        f"{r['before_cpu_ms']:.1f} ms for the VM in no group"
    )


def part_balance() -> dict:
    from bench import balancing

    heading("6c. The load balancer's cycle: 100 hosts in 4 clusters, 10,000 VMs")
    r = balancing.measure()
    for state, words in (
        ("quiet", "evenly_distributed, nothing to correct"),
        ("over", "evenly_distributed, 3 over-utilized hosts per cluster"),
        ("packing", "power_saving, every host under-utilized"),
    ):
        c = r[state]
        print(
            f"{words}: median {c['median_ms']:.1f} ms, p95 {c['p95_ms']:.1f} ms, "
            f"{c['queries']:.0f} queries, {c['migrations']:.0f} migrations started per cycle"
            + (f" (starting them: {c['moves_ms']:.0f} ms)" if c["migrations"] else "")
        )
    return r


def part_agents(user) -> dict:
    from bench import agents

    heading("7. The guest agents of 1,000 running VMs on one host")
    r = agents.measure(user, vms=1000)
    print(
        f"one agent pass ({r['batch']} VMs, oldest report first): {r['first_pass_s']:.2f} s; "
        f"every VM reported after {r['cover_passes']} passes, {r['cover_s']:.2f} s "
        f"({r['answering']} answering); a pass with nothing new: {r['steady_pass_s']:.2f} s"
    )
    print(
        f"steady poll of the host: {r['poll_before_ms']:.0f} ms with no reports, "
        f"{r['poll_after_ms']:.0f} ms with 1,000"
    )
    print(
        f"VM list first page: {r['list_before_ms']:.1f} ms ({r['list_before_queries']} queries) "
        f"before, {r['list_after_ms']:.1f} ms ({r['list_after_queries']} queries) after"
    )
    return r


def part_iso(user, env: BenchEnv) -> dict:
    from bench import iso

    megabytes = int(os.environ.get("BENCH_ISO_MB", "1024"))
    heading(f"8. Uploading a {megabytes} MiB ISO (private libvirtd with qemu)")
    r = iso.measure(user, env.environ(), env.var_dir, megabytes=megabytes)
    print(f"ISO: {r['size'] / 2**20:.0f} MiB (xorriso, cached)")
    print(
        f"virsh vol-upload: {r['virsh_s']:.1f} s = {r['virsh_mib_s']:.0f} MiB/s (the better of "
        f"{r['virsh_first_s']:.1f} s before Vireo's upload and {r['virsh_again_s']:.1f} s after)"
    )
    print(
        f"Vireo: browser chunks through daphne to the staging file {r['http_s']:.1f} s "
        f"({r['http_mib_s']:.0f} MiB/s), then the job's volume upload stream {r['job_s']:.1f} s "
        f"({r['job_mib_s']:.0f} MiB/s = {r['ratio']:.2f} x virsh's); end to end "
        f"{r['end_to_end_mib_s']:.0f} MiB/s"
    )
    print(
        f"volume read back: same size {'yes' if r['same_size'] else 'NO'}, same bytes "
        f"{'yes' if r['same_bytes'] else 'NO'}"
    )
    print(
        f"daphne RSS {r['rss_before_kib'] / 1024:.0f} MiB before, peak {r['hwm_kib'] / 1024:.0f} "
        f"MiB during the transfer: grew {r['growth_mib']:.1f} MiB (goal < {ISO_GROWTH_GOAL_MIB:.0f})"
    )
    return r


def part_console(user) -> dict:
    from bench import console

    heading("9. Console: key press to screen change, through Vireo's websocket (real qemu)")
    r = console.measure(user, presses=50)
    print(f"opening the console (ticket + graphics password): {r['open_ms']:.1f} ms")
    print(
        f"round trip over {r['presses']} key presses: median {r['median_ms']:.1f} ms, "
        f"p95 {r['p95_ms']:.1f} ms (min {r['min_ms']:.1f}, max {r['max_ms']:.1f})"
    )
    return r


def part_evacuation(user) -> dict:
    from bench import migration

    heading("10. Maintenance empties a test host of 200 VMs, 2 migrations at a time")
    r = migration.maintenance(user, poll_seconds=EVACUATION_POLL_SECONDS)
    print(
        f"{r['hosts']} test hosts, NFS storage, {r['vms']} Up VMs on the first, cluster's "
        f"maximum concurrent migrations {r['concurrency']}, monitor poll every "
        f"{r['poll_seconds']} s, 2 ThreadWorkers (node files {r['prepare_s']:.1f} s)"
    )
    print(
        f"Preparing For Maintenance -> Maintenance: {r['wall_s']:.1f} s"
        + ("" if r["reached"] else f" NOT REACHED ({r['stuck'] or 'no reason given'})")
    )
    print(
        f"{r['jobs']} migrate jobs {r['job_statuses']}: sum of their durations {r['sum_s']:.1f} s "
        f"(median {r['job_ms']['median']:.0f} ms, max {r['job_ms']['max']:.0f} ms); "
        f"sum / {r['concurrency']} = {r['ideal_s']:.1f} s"
    )
    print(f"overhead ratio wall / (sum / {r['concurrency']}): {r['ratio']:.1f}")
    print(
        f"monitor cycles meanwhile: {r['cycles']}, median {r['cycle_ms']['median']:.0f} ms "
        f"(max {r['cycle_ms']['max']:.0f}), of which evacuations_run "
        f"{r['evacuation_ms']:.0f} ms; migrations started per cycle: "
        f"{r['started_per_cycle']}"
    )
    print(
        f"a job waits in the queue {r['queue_wait_ms']:.0f} ms (median); a slot freed by a "
        f"migration's end stays empty {r['slot_idle_ms']:.0f} ms (median) until a cycle fills it"
    )
    print(f"VMs after: {r['placed']}")
    return r


def part_downtime() -> dict:
    from bench import migration

    heading("10b. Real pair: libvirt's downtime for a guest that dirties memory")
    r = migration.downtime()
    if r.get("skipped"):
        print(f"skipped: {r['skipped']}")
        return r
    print(
        f"guest: {r['memory_mb']} MiB, TCG, booted in {r['boot_s']:.0f} s; it rewrites "
        f"{r['dirty_mib']} MiB in a loop ({r['dirty_rate']}); bandwidth cap "
        f"{r['bandwidth_mbps']} Mbps, time limit {r['limit_s']:.0f} s"
    )
    for row in r["runs"]:
        print(f"auto-converge {'on ' if row['auto_converge'] else 'off'}: {row['text']}")
    return r


def summary(seed, results: dict, wall: float) -> None:
    def mark(ok: bool, missed: str = "OVER GOAL") -> str:
        return "ok" if ok else missed

    heading("Summary")
    failures = {k: v for k, v in results.items() if isinstance(v, Exception)}
    results = {k: v for k, v in results.items() if not isinstance(v, Exception)}
    if seed is not None:
        print(
            f"seed: {seed.vm_count} VMs + disks on {len(seed.hosts)} hosts, "
            f"{len(seed.clusters)} clusters, {len(seed.data_centers)} data centers "
            f"in {seed.seconds:.1f} s"
        )
    for label, r in (results.get("list") or {}).items():
        q, t = len(r["queries"]), r["timing"]
        ok = q <= LIST_QUERIES_GOAL and t["median"] <= LIST_MEDIAN_GOAL_MS
        print(
            f"{label:22} {q:2d} queries (goal <= {LIST_QUERIES_GOAL}), "
            f"median {t['median']:.1f} ms (goal <= {LIST_MEDIAN_GOAL_MS:.0f}), "
            f"p95 {t['p95']:.1f} ms  [{mark(ok)}]"
        )
    for label, r in (results.get("delegated") or {}).items():
        de = r["delegated"]
        ok = r["ratio"] <= DELEGATED_RATIO_GOAL and r["listing_on_id_lists"]
        print(
            f"{'delegated ' + label.split()[0]:22} {len(de['queries']):2d} queries, "
            f"median {de['timing']['median']:.1f} ms = {r['ratio']:.2f} x superuser's "
            f"{r['superuser']['timing']['median']:.1f} ms (goal <= {DELEGATED_RATIO_GOAL}), "
            f"p95 {de['timing']['p95']:.1f} ms  [{mark(ok)}]"
        )
    if live := results.get("live"):
        lat = live["latency"]
        ok = lat["p95"] < LIVE_P95_GOAL_MS and not live["misses"]
        print(
            f"{'websocket latency':22} median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms "
            f"(goal p95 < {LIVE_P95_GOAL_MS:.0f}), {live['misses']} missed, "
            f"first poll {live['first_poll_s']:.1f} s  [{mark(ok)}]"
        )
    if sd := results.get("shutdown"):
        ok = sd["jobs_per_s"] >= SHUTDOWN_JOBS_PER_S_GOAL and sd["all_down"]
        print(
            f"{'500 shutdowns, 1 worker':22} {sd['work_s']:.1f} s, {sd['jobs_per_s']:.1f} jobs/s "
            f"(goal >= {SHUTDOWN_JOBS_PER_S_GOAL:.0f}), all Down: "
            f"{'yes' if sd['all_down'] else 'NO'}; a live update "
            f"{sd['live_cost']['publisher']:.2f} ms (was {sd['live_cost']['own_loop']:.2f} ms)  "
            f"[{mark(ok, 'UNDER GOAL')}]"
        )
    if ad := results.get("adopt"):
        poll = ad["poll_external_ms"] / ad["poll_vireo_ms"]
        listing = ad["list_external_ms"] / ad["list_vireo_ms"]
        ok = ad["adopted"] == ad["domains"] and max(poll, listing) <= ADOPT_SLOWDOWN_GOAL
        print(
            f"{'1,000 adopted domains':22} first poll {ad['adopt_s']:.1f} s; steady poll "
            f"{poll:.2f} x, VM list {listing:.2f} x of 1,000 Vireo VMs' "
            f"(goal <= {ADOPT_SLOWDOWN_GOAL})  [{mark(ok)}]"
        )
    if cf := results.get("config"):
        ok = cf["seen_s"] <= cf["ttl_s"] + 0.1
        print(
            f"{'engine-config read':22} {cf['cached_us']:.2f} us per config_get, table re-read "
            f"{cf['refresh_ms']['median']:.2f} ms per {cf['ttl_s']:.0f} s, a write seen after "
            f"{cf['seen_s']:.2f} s (goal <= {cf['ttl_s']:.0f} s)  [{mark(ok)}]"
        )
    if sc := results.get("schedule"):
        print(
            f"{'scheduler, 100 hosts':22} {sc['queries']} queries, median {sc['median_ms']:.1f} ms, "
            f"p95 {sc['p95_ms']:.1f} ms per schedule()"
        )
    if af := results.get("affinity"):
        ok = af["median_ms"] < AFFINITY_MEDIAN_GOAL_MS
        print(
            f"{'scheduler, 50 groups':22} {af['queries']} queries, median {af['median_ms']:.1f} ms, "
            f"p95 {af['p95_ms']:.1f} ms per schedule() (goal < {AFFINITY_MEDIAN_GOAL_MS:.0f} ms)"
            f"  [{mark(ok)}]"
        )
    if ba := results.get("balance"):
        print(
            f"{'balancer, 100 hosts':22} cycle median {ba['quiet']['median_ms']:.0f} ms with "
            f"nothing to correct, {ba['over']['median_ms']:.0f} ms (evenly) and "
            f"{ba['packing']['median_ms']:.0f} ms (power_saving) starting "
            f"{ba['over']['migrations']:.0f} migrations"
        )
    if ag := results.get("agents"):
        poll = ag["poll_after_ms"] / ag["poll_before_ms"]
        listing = ag["list_after_ms"] / ag["list_before_ms"]
        ok = (
            max(poll, listing) <= AGENTS_SLOWDOWN_GOAL
            and ag["list_after_queries"] == ag["list_before_queries"]
        )
        print(
            f"{'1,000 agent reports':22} pass of {ag['batch']} {ag['first_pass_s']:.2f} s; "
            f"steady poll {poll:.2f} x, VM list {listing:.2f} x of no reports' "
            f"(goal <= {AGENTS_SLOWDOWN_GOAL}, same queries)  [{mark(ok)}]"
        )
    if iso := results.get("iso"):
        ok = iso["growth_mib"] < ISO_GROWTH_GOAL_MIB and iso["same_bytes"]
        print(
            f"{'ISO upload':22} job {iso['job_mib_s']:.0f} MiB/s = {iso['ratio']:.2f} x virsh "
            f"vol-upload's {iso['virsh_mib_s']:.0f}; web RSS grew {iso['growth_mib']:.1f} MiB "
            f"(goal < {ISO_GROWTH_GOAL_MIB:.0f})  [{mark(ok)}]"
        )
    if co := results.get("console"):
        ok = co["median_ms"] <= CONSOLE_MEDIAN_GOAL_MS
        print(
            f"{'console key to screen':22} median {co['median_ms']:.1f} ms, p95 "
            f"{co['p95_ms']:.1f} ms (goal median <= {CONSOLE_MEDIAN_GOAL_MS:.0f}); opening "
            f"{co['open_ms']:.0f} ms  [{mark(ok)}]"
        )
    if ev := results.get("evacuation"):
        print(
            f"{'Maintenance, 200 VMs':22} {ev['wall_s']:.1f} s against {ev['ideal_s']:.1f} s of "
            f"migrations / {ev['concurrency']}: overhead ratio {ev['ratio']:.1f} (poll "
            f"{ev['poll_seconds']} s), Maintenance reached: {'yes' if ev['reached'] else 'NO'}"
        )
    if dt := results.get("downtime"):
        if dt.get("skipped"):
            print(f"{'migration downtime':22} skipped: {dt['skipped']}")
        for row in dt.get("runs", []):
            label = f"downtime, a-c {'on' if row['auto_converge'] else 'off'}"
            print(f"{label:22} {row['short']}")
    for part, exc in failures.items():
        print(f"{part}: FAILED ({exc.__class__.__name__}: {exc})")
    print(f"whole run: {wall:.0f} s; load average now {load()} on {os.cpu_count()} CPUs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    args = parser.parse_args()
    parts = args.only or list(PARTS)

    started = time.perf_counter()
    env = BenchEnv()
    results: dict = {}
    seed = None
    failed = False
    try:
        heading("Setup")
        print(f"database {env.db_name}, Redis {env.redis_url}, VAR_DIR {env.var_dir}")
        print(f"load average {load()} on {os.cpu_count()} CPUs (other load skews the figures)")
        env.setup()
        from django.db import connection

        from bench.seed import inventory_seed, superuser

        user = superuser()
        delegation = None
        if {"list", "delegated", "live"} & set(parts):
            # 9,950 VMs in two data centers (12 clusters of ~800 or ~900 VMs) and a small
            # remote data center of 50: 10,000 VMs. Remote names sort after the main ones.
            seed = inventory_seed(
                prefix="bench", data_centers=2, clusters=12, hosts=100, vms=9_950, user=user
            )
            remote = inventory_seed(
                prefix="remote", data_centers=1, clusters=1, hosts=1, vms=50, user=user
            )
            seed.merge(remote)
            if "delegated" in parts:
                from django.conf import settings

                from bench.delegated import delegate_seed

                delegation = delegate_seed(
                    remote=remote.data_centers[0], per_page=settings.VIREO_PAGE_SIZE
                )
            with connection.cursor() as cur:  # planner statistics, as autovacuum would keep
                cur.execute("ANALYZE")
            print(
                f"seeded {seed.vm_count} VMs (+1 disk each) with bulk_create: {seed.seconds:.1f} s"
            )
        for part, run in (
            ("list", lambda: part_list(user)),
            ("delegated", lambda: part_delegated(user, delegation)),
            ("live", lambda: part_live(user, env)),
            ("shutdown", lambda: part_shutdown(user)),
            ("adopt", lambda: part_adopt(user)),
            ("config", part_config),
            ("schedule", part_schedule),
            ("affinity", part_affinity),
            ("balance", part_balance),
            ("agents", lambda: part_agents(user)),
            ("iso", lambda: part_iso(user, env)),
            ("console", lambda: part_console(user)),
            ("evacuation", lambda: part_evacuation(user)),
            ("downtime", part_downtime),
        ):
            if part not in parts:
                continue
            try:
                results[part] = run()
            except Exception as exc:
                failed = True
                traceback.print_exc()
                results[part] = exc
        summary(seed, results, time.perf_counter() - started)
    finally:
        env.teardown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
