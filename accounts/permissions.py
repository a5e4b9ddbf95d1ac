"""The one permission resolver. Views, forms' dropdowns, websocket subscriptions and the User
Portal ask it; templates read the sets it computes.

Until roles land (issue 3) only superusers may see or do anything: any other logged-in user
gets empty querysets and no actions.
"""

from django.db.models import QuerySet


def restrict(user, queryset: QuerySet, action: str = "view") -> QuerySet:
    """`queryset` narrowed to the objects `user` may perform `action` on."""
    if user is not None and user.is_active and user.is_superuser:
        return queryset
    return queryset.none()


def permitted_actions(user, objects, actions) -> dict[int, frozenset[str]]:
    """For a page of objects: object pk -> the subset of `actions` the user holds on it."""
    if user is not None and user.is_active and user.is_superuser:
        allowed = frozenset(actions)
        return {obj.pk: allowed for obj in objects}
    return {obj.pk: frozenset() for obj in objects}


def can(user, action: str, obj=None) -> bool:
    """Whether `user` may perform `action` on `obj` (or system-wide when obj is None)."""
    return bool(user is not None and user.is_active and user.is_superuser)


def can_subscribe(user, topic: str) -> bool:
    """Whether `user` may follow live updates for `topic`."""
    return can(user, "view")
