"""Part 1b: the first page of the VM list for a delegated administrator, next to the superuser.

The delegated user holds grants over about a tenth of the 10,000 VMs at three levels:
ClusterAdmin on one cluster (~800 VMs), UserRole on 150 single VMs of other clusters, and
DataCenterAdmin on the small remote data center (50 VMs). Both users' requests alternate, so
the machine's load weighs on them alike. The permission part is one query per request and
action (the user's grants, from guardian's tables); the listing then filters on plain id
lists and never touches guardian's tables itself.
"""

import time
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm

from accounts.models import Role
from accounts.permissions import restrict
from accounts.services import role_permission
from vms.models import Cluster, DataCenter, VirtualMachine

from .stats import summary_ms
from .vm_list import PAGES, _get, explain, query_timer, sql_timer

RATIO_GOAL = 1.5
CLUSTER_ADMIN_VMS = 800
USER_ROLE_VMS = 150
GUARDIAN_TABLES = (
    UserObjectPermission._meta.db_table,
    GroupObjectPermission._meta.db_table,
)


@dataclass
class Delegation:
    user: object
    cluster: Cluster
    cluster_vms: int
    single_vms: int
    data_center: DataCenter
    data_center_vms: int
    visible: int
    grant_rows: int
    last_on_first_page: str
    seconds: float


def _grant(role_name: str, user, obj) -> None:
    """As the Add Permission window does (factories.grant); `obj` may be a queryset."""
    model = obj.model if hasattr(obj, "model") else type(obj)
    assign_perm(role_permission(Role.objects.get(name=role_name), model), user, obj)


def delegate_seed(*, remote: DataCenter, per_page: int) -> Delegation:
    """The delegated user and its grants: ClusterAdmin on the cluster nearest 800 VMs,
    UserRole on 150 VMs spread over the other clusters, DataCenterAdmin on `remote`."""
    started = time.perf_counter()
    User = get_user_model()
    user = User.objects.create_user("bench-delegate", "delegate@example.com", "bench")
    sizes = (
        Cluster.objects.exclude(data_center=remote)
        .annotate(n=Count("vms"))
        .values_list("pk", "n")
        .order_by("pk")
    )
    cluster_pk, cluster_vms = min(sizes, key=lambda s: abs(s[1] - CLUSTER_ADMIN_VMS))
    cluster = Cluster.objects.get(pk=cluster_pk)
    _grant("ClusterAdmin", user, cluster)

    others = list(
        VirtualMachine.objects.exclude(cluster=cluster)
        .exclude(cluster__data_center=remote)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    step = len(others) // USER_ROLE_VMS
    singles = others[step // 2 :: step][:USER_ROLE_VMS]
    _grant("UserRole", user, VirtualMachine.objects.filter(pk__in=singles))
    _grant("DataCenterAdmin", user, remote)

    visible = restrict(user, VirtualMachine.objects.all()).order_by("name", "pk")
    return Delegation(
        user=user,
        cluster=cluster,
        cluster_vms=cluster_vms,
        single_vms=len(singles),
        data_center=remote,
        data_center_vms=VirtualMachine.objects.filter(cluster__data_center=remote).count(),
        visible=visible.count(),
        grant_rows=UserObjectPermission.objects.filter(user=user).count(),
        last_on_first_page=visible.values_list("name", flat=True)[per_page - 1],
        seconds=time.perf_counter() - started,
    )


def _is_permission_query(sql: str) -> bool:
    return any(f'"{table}"' in sql for table in GUARDIAN_TABLES)


def _is_vm_page_query(sql: str) -> bool:
    """The SELECT of the page's VMs (not the paginator's COUNT)."""
    head = sql.split(" FROM ", 1)[0]
    return (
        sql.startswith("SELECT")
        and '"vms_virtualmachine"."name"' in head
        and "COUNT(" not in head
        and " LIMIT " in sql
    )


def _is_count_query(sql: str) -> bool:
    return sql.startswith("SELECT COUNT(") and '"vms_virtualmachine"' in sql


def _capture(client: Client, path: str, headers: dict, expect: str) -> list[tuple[str, float]]:
    times: list[float] = []
    with CaptureQueriesContext(connection) as ctx, query_timer(times):
        _get(client, path, headers, expect)
    return [(q["sql"], t) for q, t in zip(ctx.captured_queries, times, strict=True)]


def measure(superuser, delegation: Delegation, *, requests: int = 50) -> dict:
    """For each page: queries of one request and server time over `requests` alternating
    requests of the superuser and the delegated user."""
    clients = {}
    for who, account in (("superuser", superuser), ("delegated", delegation.user)):
        clients[who] = Client()
        clients[who].force_login(account)
    expect = {"superuser": "bench-vm00049", "delegated": delegation.last_on_first_page}
    results = {}
    for label, (path, headers) in PAGES.items():
        for _ in range(5):  # warm-up
            for who, client in clients.items():
                _get(client, path, headers, expect[who])
        page = {
            who: {
                "queries": _capture(client, path, headers, expect[who]),
                "durations": [],
                "sql": [],
            }
            for who, client in clients.items()
        }
        for n in range(requests):
            # Alternate who goes first, so neither always follows the other.
            order = list(clients.items()) if n % 2 == 0 else list(clients.items())[::-1]
            for who, client in order:
                totals = [0.0]
                with sql_timer(totals):
                    started = time.perf_counter()
                    _get(client, path, headers, expect[who])
                    page[who]["durations"].append(time.perf_counter() - started)
                page[who]["sql"].append(totals[0])
        for who in clients:
            page[who]["timing"] = summary_ms(page[who].pop("durations"))
            page[who]["sql"] = summary_ms(page[who]["sql"])
        queries = page["delegated"]["queries"]
        listing = [sql for sql, _ in queries if _is_vm_page_query(sql)]
        page["ratio"] = (
            page["delegated"]["timing"]["median"] / page["superuser"]["timing"]["median"]
        )
        page["permission_queries"] = sum(_is_permission_query(sql) for sql, _ in queries)
        page["listing_on_id_lists"] = (
            len(listing) == 1 and not _is_permission_query(listing[0]) and " IN (" in listing[0]
        )
        page["over_goal"] = page["ratio"] > RATIO_GOAL or not page["listing_on_id_lists"]
        if page["over_goal"] and not any("explain" in r for r in results.values()):
            # Once: the steps and plans are the same for both pages.
            page["breakdown"] = breakdown(superuser, delegation.user)
            page["explain"] = {
                kind: explain(sql)
                for sql, _ in queries
                for kind in ("page", "count")
                if (kind == "page" and _is_vm_page_query(sql))
                or (kind == "count" and _is_count_query(sql))
            }
        results[label] = page
    return results


def breakdown(superuser, delegated_user, *, runs: int = 20) -> list[tuple[str, dict, dict]]:
    """Where a list request's time goes, step by step, for both users: (step, superuser's,
    delegated's), each {"total", "sql"} median milliseconds (Python is the difference)."""
    from django.conf import settings

    from accounts.permissions import is_admin, permitted_actions
    from vms.actions import VM_STATUS_ACTIONS
    from vms.selectors import can_create_vm, vms_visible

    actions = [*VM_STATUS_ACTIONS, "manage_permissions", "edit_vm"]
    per_page = settings.VIREO_PAGE_SIZE

    def steps(user):
        page = list(vms_visible(user).order_by("name", "pk")[:per_page])
        return {
            "is_admin (portal gate)": lambda: is_admin(user),
            "paginator COUNT": lambda: vms_visible(user).count(),
            "page of VMs": lambda: list(vms_visible(user).order_by("name", "pk")[:per_page]),
            "permitted_actions (page)": lambda: permitted_actions(user, page, actions),
            "can_create_vm": lambda: can_create_vm(user),
        }

    def timed(call) -> dict:
        for _ in range(3):
            call()
        totals, sqls = [], []
        for _ in range(runs):
            sql = [0.0]
            with sql_timer(sql):
                started = time.perf_counter()
                call()
                totals.append(time.perf_counter() - started)
            sqls.append(sql[0])
        return {"total": summary_ms(totals)["median"], "sql": summary_ms(sqls)["median"]}

    su, de = steps(superuser), steps(delegated_user)
    return [(name, timed(su[name]), timed(de[name])) for name in su]


def tag(sql: str) -> str:
    """What a query of the delegated request is, for the printout."""
    if _is_vm_page_query(sql):
        return "VM page + guardian" if _is_permission_query(sql) else "VM page"
    if _is_count_query(sql):
        return "count + guardian" if _is_permission_query(sql) else "count"
    return "permission" if _is_permission_query(sql) else ""
