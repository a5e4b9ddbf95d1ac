"""The one permission resolver. Views, forms' dropdowns, websocket subscriptions and the User
Portal ask it; templates read the sets it computes.

A user may do action A on object O when they (or one of their groups) hold a role containing
A on O or on an object above O (see accounts.scopes). Superusers may do everything. A
request reads the user's grants once (`held`); lists then filter on plain id lists, so the
cost grows with the user's grants, never with the number of objects.
"""

from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models import CharField, Q, QuerySet, Value
from guardian.models import GroupObjectPermission, UserObjectPermission

from .catalogue import ACTIONS
from .models import Role, RolePermission, System
from .scopes import resolve_path, scope_paths


def _active(user) -> bool:
    return user is not None and user.is_authenticated and user.is_active


@dataclass(frozen=True)
class Held:
    """Everything a user holds: (content type id, object id) -> actions, whether any of
    their roles is administrative, and the objects an administrative role is held on."""

    actions: dict[tuple[int, int], frozenset[str]]
    admin: bool
    admin_at: frozenset[tuple[int, int]] = frozenset()


def held(user) -> Held:
    """The user's grants (their own and their groups'), with each role's actions: one SQL
    query, which grows with the user's grants, never with the number of objects. Memoised
    for the current request when PermissionCacheMiddleware is in place."""
    cache = getattr(user, "_vireo_grants", None)
    if cache is not None and "held" in cache:
        return cache["held"]
    fields = (
        "content_type_id",
        "object_pk",
        "permission__role_binding__role__actions__action",
        "permission__role_binding__role__is_admin",
    )
    bound = RolePermission.objects.values("permission_id")
    own = UserObjectPermission.objects.filter(user_id=user.pk, permission_id__in=bound).values_list(
        *fields
    )
    via_groups = GroupObjectPermission.objects.filter(
        group__user=user.pk, permission_id__in=bound
    ).values_list(*fields)
    found: dict[tuple[int, int], set[str]] = {}
    admin = False
    admin_at: set[tuple[int, int]] = set()
    for ct_id, pk, action, is_admin in own.union(via_groups, all=True):
        admin = admin or bool(is_admin)
        if is_admin and pk.isdigit():
            admin_at.add((ct_id, int(pk)))
        if action and pk.isdigit():
            found.setdefault((ct_id, int(pk)), set()).add(action)
    result = Held(
        actions={key: frozenset(a) for key, a in found.items()},
        admin=admin,
        admin_at=frozenset(admin_at),
    )
    if cache is not None:
        cache["held"] = result
    return result


def grants(user, action: str | tuple[str, ...]) -> dict[int, set[int]]:
    """Where the user holds `action` (any of them, for a tuple): content type id -> ids."""
    wanted = set(action) if isinstance(action, tuple) else {action}
    found: dict[int, set[int]] = {}
    for (ct_id, pk), actions in held(user).actions.items():
        if actions & wanted:
            found.setdefault(ct_id, set()).add(pk)
    return found


def _grant_q(user, model, action) -> Q | None:
    """Q on `model` for the objects the user's grants reach through an ancestor (or the
    object itself); None when nothing is reached, Q() when a system-wide grant reaches all."""
    reach = grants(user, action)
    q = Q()
    reached = False
    for ancestor, path in scope_paths(model):
        ids = reach.get(ContentType.objects.get_for_model(ancestor).pk)
        if not ids:
            continue
        if path is None:
            return Q()
        path, ids = _one_hop(model, path, ids)
        q |= Q(**{f"{path}__in": sorted(ids) if isinstance(ids, set) else ids})
        reached = True
    return q if reached else None


# Containers whose ids a grant one level up may be turned into: few rows each.
_CONTAINERS = ("vms.cluster", "storage.storagedomain")


def _one_hop(model, path: str, ids: set[int]):
    """`cluster__data_center_id IN (dcs)` -> `cluster_id IN (SELECT id FROM cluster WHERE
    data_center_id IN (dcs))`: a condition on the object's own column, with no join, still
    inside the same SQL query."""
    head, _, rest = path.partition("__")
    if not rest or "__" in rest:
        return path, ids
    related = model._meta.get_field(head).related_model
    if related._meta.label_lower not in _CONTAINERS:
        return path, ids
    return f"{head}_id", related.objects.filter(**{f"{rest}__in": sorted(ids)}).values("pk")


def restrict(user, queryset: QuerySet, action: str | tuple[str, ...] = "view") -> QuerySet:
    """`queryset` narrowed to the objects `user` may perform `action` on (any of them, for a
    tuple). The permission part is one SQL query (the user's grants); the list query then
    filters on plain id lists and keeps its own indexes."""
    if not _active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    q = _grant_q(user, queryset.model, action)
    return queryset.none() if q is None else queryset.filter(q)


def _ancestor_keys(obj) -> list[tuple[int, str]]:
    keys = []
    for ancestor, path in scope_paths(type(obj)):
        pk = resolve_path(obj, path)
        if pk is not None:
            keys.append((ContentType.objects.get_for_model(ancestor).pk, str(pk)))
    return keys


def permitted_actions(user, objects, actions) -> dict[int, frozenset[str]]:
    """For a page of objects: object pk -> the subset of `actions` the user holds on it
    (answered from `held`: no query of its own once the request has read the grants)."""
    objects = list(objects)
    wanted = frozenset(actions)
    if not _active(user):
        return {obj.pk: frozenset() for obj in objects}
    if user.is_superuser:
        return {obj.pk: wanted for obj in objects}
    table = held(user).actions
    result = {}
    for obj in objects:
        reached = set()
        for ct_id, pk in _ancestor_keys(obj):
            reached |= table.get((ct_id, int(pk)), frozenset())
        result[obj.pk] = frozenset(reached) & wanted
    return result


def actions_on(user, obj) -> frozenset[str]:
    """Every action the user holds on one object."""
    return permitted_actions(user, [obj], ACTIONS)[obj.pk]


def can(user, action: str, obj=None) -> bool:
    """Whether `user` may perform `action` on `obj`, or (obj None) anywhere at all."""
    if not _active(user):
        return False
    if user.is_superuser:
        return True
    if obj is not None:
        return action in permitted_actions(user, [obj], [action])[obj.pk]
    return bool(grants(user, action))


def is_admin(user) -> bool:
    """Whether the user may use the Administration Portal: an administrative role anywhere."""
    if not _active(user):
        return False
    return user.is_superuser or held(user).admin


def holds_admin_role(user, obj) -> bool:
    """Whether the user holds an administrative role on `obj` or on an object above it."""
    if not _active(user):
        return False
    if user.is_superuser:
        return True
    admin_at = held(user).admin_at
    return any((ct_id, int(pk)) in admin_at for ct_id, pk in _ancestor_keys(obj))


def may_read_permissions(user, obj) -> bool:
    """Whether the user may read `obj`'s Permissions window (who holds which role there):
    `manage_permissions` or an administrative role on it; `view` alone is not enough."""
    return can(user, "manage_permissions", obj) or holds_admin_role(user, obj)


def may_follow_permissions(user) -> bool:
    """Whether the user may follow the "perms" topic: they may read some Permissions window."""
    return _active(user) and (
        user.is_superuser or held(user).admin or bool(grants(user, "manage_permissions"))
    )


TOPIC_MODELS = {
    "vm": "vms.VirtualMachine",
    "host": "vms.Host",
    "job": "portal.Job",
    "cluster": "vms.Cluster",
}
LIST_TOPICS = {
    "perms",
    "vms",
    "events",
    "jobs",
    "disks",
    "storage",
    "hosts",
    "clusters",
    "datacenters",
    "roles",
    "templates",
    "networks",
}


def can_subscribe(user, topic: str) -> bool:
    """Whether `user` may follow live updates for `topic` ("vm.12", "vm.12.events", "vms", ...).

    Object topics need the right to see the object; list topics carry no data (pages re-fetch
    through their views, which filter), so any user with a grant may follow them, except
    "perms", which follows the Permissions windows' own rule."""
    if not _active(user):
        return False
    kind, _, rest = topic.partition(".")
    if topic == "perms":
        return may_follow_permissions(user)
    if not rest:
        return topic in LIST_TOPICS and (
            user.is_superuser or can(user, "view") or can(user, "login")
        )

    label = TOPIC_MODELS.get(kind)
    if label is None:
        return False
    pk = rest.split(".", 1)[0]
    if not (pk.isascii() and pk.isdigit()):
        return False
    model = apps.get_model(label)
    return restrict(user, model.objects.filter(pk=int(pk)), "view").exists()


def subscribable(user, topics) -> set[str]:
    """The topics among `topics` that `user` may follow, as `can_subscribe` answers each, for a
    whole websocket frame: list topics are answered from the grants in memory (`held`), and
    every object topic of the frame is checked in one SQL query, however many there are."""
    if not _active(user):
        return set()

    allowed: set[str] = set()
    wanted: dict[str, dict[int, list[str]]] = {}
    for topic in dict.fromkeys(topics):
        kind, _, rest = topic.partition(".")
        if not rest:
            if can_subscribe(user, topic):
                allowed.add(topic)
            continue
        pk = rest.split(".", 1)[0]
        if kind in TOPIC_MODELS and pk.isascii() and pk.isdigit() and int(pk) < 2**63:
            wanted.setdefault(kind, {}).setdefault(int(pk), []).append(topic)
    queries = []
    for kind, by_pk in wanted.items():
        model = apps.get_model(TOPIC_MODELS[kind])
        qs = restrict(user, model.objects.filter(pk__in=sorted(by_pk)), "view")
        if not qs.query.is_empty():
            queries.append(
                qs.order_by()
                .annotate(topic_kind=Value(kind, CharField()))
                .values_list("topic_kind", "pk")
            )
    if queries:
        for kind, pk in queries[0].union(*queries[1:], all=True):
            allowed.update(wanted[kind][pk])
    return allowed


@dataclass(frozen=True)
class PermissionRow:
    """One line of a Permissions sub-tab: who, which role, and where it comes from."""

    id: int
    kind: str  # "user" or "group"
    principal: object
    role: Role
    source: object  # the object the permission is on
    inherited: bool

    @property
    def source_label(self) -> str:
        """Where an inherited permission comes from, e.g. "Data Center Default"."""
        if isinstance(self.source, System):
            return "System"
        return f"{self.source._meta.verbose_name.title()} {self.source}"


def object_permissions(obj) -> list[PermissionRow]:
    """Every permission that reaches `obj`, its own and inherited, and the superuser accounts."""
    keys = _ancestor_keys(obj)
    if not keys:
        return []
    where = Q()
    for ct_id, pk in keys:
        where |= Q(content_type_id=ct_id, object_pk=pk)
    own_key = keys[-1]
    bound = RolePermission.objects.values("permission_id")
    rows = []
    related = ("permission__role_binding__role", "content_type")
    for kind, qs in (
        (
            "user",
            UserObjectPermission.objects.filter(where, permission_id__in=bound).select_related(
                "user", *related
            ),
        ),
        (
            "group",
            GroupObjectPermission.objects.filter(where, permission_id__in=bound).select_related(
                "group", *related
            ),
        ),
    ):
        for row in qs:
            key = (row.content_type_id, row.object_pk)
            source = (
                obj
                if key == own_key
                else (System.get() if row.content_type.model == "system" else row.content_object)
            )
            rows.append(
                PermissionRow(
                    id=row.pk,
                    kind=kind,
                    principal=row.user if kind == "user" else row.group,
                    role=row.permission.role_binding.role,
                    source=source,
                    inherited=key != own_key,
                )
            )
    # Superuser accounts hold SuperUser on the System by definition (not removable here).

    superuser_role = Role.objects.filter(name="SuperUser").first()
    if superuser_role is not None:
        system = System.get()
        for account in get_user_model().objects.filter(is_superuser=True, is_active=True):
            rows.append(
                PermissionRow(
                    id=0,
                    kind="user",
                    principal=account,
                    role=superuser_role,
                    source=system,
                    inherited=True,
                )
            )
    rows.sort(key=lambda r: (r.inherited, str(r.principal), r.role.name))
    return rows
