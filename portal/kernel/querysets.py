"""Querysets that answer "what may this user do here": `VirtualMachine.objects.restrict(user,
"run")`, chained like any filter (`Host.objects.select_related("cluster").restrict(user)`).

The kernel imports no app, so the answer comes from the one permission resolver
(`accounts.permissions.restrict`), which registers itself here when the accounts app is
ready. The models of every app (and the kernel's Job and Event) use this queryset.
"""

from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from django.db import models

Resolver = Callable[[object, models.QuerySet, str | tuple[str, ...]], models.QuerySet]
_resolver: Resolver | None = None


def restriction_resolver_set(resolver: Resolver) -> None:
    """Install the function that narrows a queryset to what a user may do (accounts does)."""
    global _resolver
    _resolver = resolver


class RestrictedQuerySet(models.QuerySet):
    """A queryset with `restrict(user, action)`: only the objects `user` may `action` on."""

    def restrict(self, user, action: str | tuple[str, ...] = "view") -> models.QuerySet:
        if _resolver is None:
            raise ImproperlyConfigured("No permission resolver: is accounts in INSTALLED_APPS?")
        return _resolver(user, self, action)


RestrictedManager = models.Manager.from_queryset(RestrictedQuerySet)
