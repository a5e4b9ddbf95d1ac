"""Roles and the objects permissions hang on.

A permission is (user or group, role, object). django-guardian stores it: each role has one
Django Permission per kind of object it can be assigned on (codename `role_<id>`), and a
guardian object-permission row ties user or group, that Permission and the object. The whole
system is the `System` singleton. `RolePermission` remembers which role a Permission stands
for, and `RoleAction` rows are the role's actions, so the resolver can ask the database
"may this user do X here" in one query.
"""

from django.contrib.auth.models import Permission
from django.db import models
from django.db.models.functions import Lower

from portal.kernel.querysets import RestrictedManager


class System(models.Model):
    """The whole virtualized environment: the object of system-wide permissions (pk 1)."""

    name = models.CharField(max_length=64, default="System")

    objects = RestrictedManager()

    def __str__(self) -> str:
        return "System"

    @classmethod
    def get(cls) -> "System":
        return cls.objects.get_or_create(pk=1)[0]


class Role(models.Model):
    """A named set of action permissions; administrative roles open the Administration Portal."""

    name = models.CharField(max_length=126, unique=True)
    description = models.CharField(max_length=1000, blank=True)
    is_admin = models.BooleanField("Administrative role", default=False)
    builtin = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["-is_admin", "name"]
        constraints = [
            # "RaceRole" and "racerole" are one name: two requests racing cannot both create it.
            models.UniqueConstraint(Lower("name"), name="role_name_unique_ci")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def account_type(self) -> str:
        return "Admin" if self.is_admin else "User"

    @property
    def action_set(self) -> frozenset[str]:
        return frozenset(a.action for a in self.actions.all())


class RoleAction(models.Model):
    """One action permission a role grants."""

    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=64, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["role", "action"], name="role_action_unique")
        ]

    def __str__(self) -> str:
        return f"{self.role_id}:{self.action}"


class RolePermission(models.Model):
    """The Django Permission (codename role_<id>, one per object type) guardian stores for a role."""

    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="permissions")
    permission = models.OneToOneField(
        Permission, on_delete=models.CASCADE, related_name="role_binding"
    )

    def __str__(self) -> str:
        return f"{self.role_id}:{self.permission_id}"
