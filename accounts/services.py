"""Services for roles and permissions. Each checks that the acting user may do it, writes
through guardian, records an Event, and tells open websockets of the users concerned to
re-check what they follow."""

import re

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm

from portal.kernel.audit import actor, event_record
from portal.kernel.errors import ActionRefused
from portal.kernel.live import broadcast, recheck_users
from portal.kernel.models import Phase
from portal.kernel.validators import text_check
from vms.models import Cluster, Host, VirtualMachine

from .catalogue import ACTIONS, BUILTIN_ROLES, CREATOR_ROLE
from .models import Role, RoleAction, RolePermission, System
from .permissions import actions_on, can, holds_admin_role

ROLE_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,126}$")


def roles_ensure_builtin() -> None:
    """Create or refresh the built-in roles from the catalogue (run after every migrate)."""
    for name, (is_admin, description, actions) in BUILTIN_ROLES.items():
        role, _ = Role.objects.update_or_create(
            name=name, defaults={"is_admin": is_admin, "description": description, "builtin": True}
        )
        _role_actions_set(role, actions)
    System.get()


def _role_actions_set(role: Role, actions) -> None:
    wanted = set(actions)
    RoleAction.objects.filter(role=role).exclude(action__in=wanted).delete()
    have = set(RoleAction.objects.filter(role=role).values_list("action", flat=True))
    RoleAction.objects.bulk_create([RoleAction(role=role, action=a) for a in wanted - have])


def role_permission(role: Role, model) -> Permission:
    """The guardian Permission that stands for `role` on objects of `model`."""
    ct = ContentType.objects.get_for_model(model)
    perm, created = Permission.objects.get_or_create(
        codename=f"role_{role.pk}",
        content_type=ct,
        defaults={"name": f"Holds role {role.name}"[:255]},
    )
    if created:
        RolePermission.objects.create(role=role, permission=perm)
    return perm


def _principal_users(principal) -> list[int]:
    if isinstance(principal, Group):
        return list(principal.user_set.values_list("pk", flat=True))
    return [principal.pk]


def _object_label(obj) -> tuple[str, str]:
    kind = "system" if isinstance(obj, System) else obj._meta.model_name
    return kind, str(obj)


def _event_target(obj) -> dict:
    if isinstance(obj, VirtualMachine):
        return {"vm": obj}
    if isinstance(obj, Cluster):
        return {"cluster": obj}
    if isinstance(obj, Host):
        return {"host": obj, "cluster": obj.cluster}
    return {}


def assignable_roles(user, obj):
    """Roles `user` may hand out on `obj`: they need `manage_permissions` there, and a role
    whose actions they all hold there themselves; an administrative role (which opens the
    Administration Portal) only if they hold an administrative role there too."""
    roles = Role.objects.prefetch_related("actions")
    if user.is_superuser:
        return list(roles)
    held = actions_on(user, obj)
    if "manage_permissions" not in held:
        return []
    admin_here = holds_admin_role(user, obj)
    return [r for r in roles if r.action_set <= held and (admin_here or not r.is_admin)]


def permission_add(*, user, principal, role: Role, obj) -> None:
    """Give `principal` (a user or a group) `role` on `obj`."""
    if not can(user, "manage_permissions", obj):
        raise ActionRefused(f"You may not assign permissions on {obj}.")
    if role not in assignable_roles(user, obj):
        raise ActionRefused(f"You may not hand out the role {role.name} on {obj}.")
    perm = role_permission(role, type(obj))
    table = GroupObjectPermission if isinstance(principal, Group) else UserObjectPermission
    who = {"group": principal} if isinstance(principal, Group) else {"user": principal}
    ct = ContentType.objects.get_for_model(type(obj))
    with transaction.atomic():
        if table.objects.filter(
            permission=perm, content_type=ct, object_pk=str(obj.pk), **who
        ).exists():
            raise ActionRefused(f"{principal} already holds {role.name} on {obj}.")
        assign_perm(perm, principal, obj)
        kind, name = _object_label(obj)
        event_record(
            action="add_permission",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type=kind,
            object_name=name,
            message=f"{actor(user)} gave {role.name} on {kind} {name} to {principal}.",
            **_event_target(obj),
        )
        broadcast("perms")
        recheck_users(_principal_users(principal))


def permission_remove(*, user, kind: str, row_id: int, obj) -> None:
    """Take away one permission given directly on `obj` (inherited ones are removed where given)."""
    if not can(user, "manage_permissions", obj):
        raise ActionRefused(f"You may not remove permissions on {obj}.")
    table = GroupObjectPermission if kind == "group" else UserObjectPermission
    ct = ContentType.objects.get_for_model(type(obj))
    with transaction.atomic():
        row = (
            table.objects.select_related("permission__role_binding__role")
            .filter(pk=row_id, content_type=ct, object_pk=str(obj.pk))
            .first()
        )
        if row is None:
            raise ActionRefused(
                "That permission does not exist on this object any more (perhaps it is inherited)."
            )
        principal = row.group if kind == "group" else row.user
        role = row.permission.role_binding.role
        if not user.is_superuser and (
            not role.action_set <= actions_on(user, obj)
            or (role.is_admin and not holds_admin_role(user, obj))
        ):
            raise ActionRefused(f"You may not remove the role {role.name}.")
        row.delete()
        label_kind, name = _object_label(obj)
        event_record(
            action="remove_permission",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type=label_kind,
            object_name=name,
            message=f"{actor(user)} removed {role.name} on {label_kind} {name} from {principal}.",
            **_event_target(obj),
        )
        broadcast("perms")
        recheck_users(_principal_users(principal))


def permission_grant_creator(*, user, vm) -> None:
    """Whoever creates a VM holds UserVmEngine on it."""
    if user is None or not user.is_authenticated:
        return
    role = Role.objects.filter(name=CREATOR_ROLE).first()
    if role is not None:
        assign_perm(role_permission(role, type(vm)), user, vm)


def _role_validate(name: str, actions, exclude_pk=None) -> tuple[str, list[str]]:
    name = (name or "").strip()
    if not ROLE_NAME_RE.match(name):
        raise ActionRefused(
            "Role name is required: letters, digits, '-', '_' and '.', at most 126 characters."
        )
    if Role.objects.filter(name__iexact=name).exclude(pk=exclude_pk).exists():
        raise ActionRefused(f"A role named {name} already exists.")
    actions = [a for a in actions if a in ACTIONS]
    if not actions:
        raise ActionRefused("Tick at least one action permission.")
    return name, actions


def _role_save(role: Role) -> Role:
    """Save a role; a name another request took meanwhile (in any case) is a refusal. The
    check in _role_validate answers the common case, the unique constraint the race."""
    try:
        with transaction.atomic():
            role.save()
    except IntegrityError:
        raise ActionRefused(f"A role named {role.name} already exists.") from None
    return role


def role_create(*, user, name: str, description: str, is_admin: bool, actions) -> Role:
    """New custom role."""
    if not can(user, "manage_roles", System.get()):
        raise ActionRefused("You may not create roles.")
    name, actions = _role_validate(name, actions)
    with transaction.atomic():
        description = text_check(description, "Description")[:1000]
        role = _role_save(Role(name=name, description=description, is_admin=is_admin))
        _role_actions_set(role, actions)
        event_record(
            action="add_role",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="role",
            object_name=name,
            message=f"{actor(user)} created role {name}.",
        )
        broadcast("roles")
    return role


def role_update(
    *, user, role_id: int, name: str, description: str, is_admin: bool, actions
) -> Role:
    """Edit a custom role; built-in roles cannot be changed."""
    if not can(user, "manage_roles", System.get()):
        raise ActionRefused("You may not edit roles.")
    with transaction.atomic():
        role = Role.objects.select_for_update().filter(pk=role_id).first()
        if role is None:
            raise ActionRefused("That role does not exist any more.")
        if role.builtin:
            raise ActionRefused(f"{role.name} is a built-in role; it cannot be edited.")
        name, actions = _role_validate(name, actions, exclude_pk=role.pk)
        description = text_check(description, "Description")[:1000]
        role.name, role.description, role.is_admin = name, description, is_admin
        _role_save(role)
        _role_actions_set(role, actions)
        event_record(
            action="edit_role",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="role",
            object_name=name,
            message=f"{actor(user)} edited role {name}.",
        )
        broadcast("roles")
        holders = UserObjectPermission.objects.filter(
            permission__role_binding__role=role
        ).values_list("user_id", flat=True)
        # Members of groups holding the role are holders too.
        members = (
            get_user_model()
            .objects.filter(
                groups__in=GroupObjectPermission.objects.filter(
                    permission__role_binding__role=role
                ).values("group_id")
            )
            .values_list("pk", flat=True)
        )
        recheck_users([*holders, *members])
    return role


def role_remove(*, user, role_id: int) -> None:
    """Remove a custom role that nobody holds."""
    if not can(user, "manage_roles", System.get()):
        raise ActionRefused("You may not remove roles.")
    with transaction.atomic():
        role = Role.objects.select_for_update().filter(pk=role_id).first()
        if role is None:
            raise ActionRefused("That role does not exist any more.")
        if role.builtin:
            raise ActionRefused(f"{role.name} is a built-in role; it cannot be removed.")
        perms = role.permissions.values("permission_id")
        if (
            UserObjectPermission.objects.filter(permission_id__in=perms).exists()
            or GroupObjectPermission.objects.filter(permission_id__in=perms).exists()
        ):
            raise ActionRefused(
                f"{role.name} is assigned to users or groups; remove those permissions first."
            )
        Permission.objects.filter(pk__in=perms).delete()
        name = role.name
        role.delete()
        event_record(
            action="remove_role",
            phase=Phase.SUCCEEDED,
            user=user,
            object_type="role",
            object_name=name,
            message=f"{actor(user)} removed role {name}.",
        )
        broadcast("roles")


def principals_search(text: str, limit: int = 50):
    """Users and groups whose name or user name contains `text` (the Add window's Search)."""
    text = (text or "").strip()
    User = get_user_model()
    from guardian.conf import settings as guardian_settings

    users = User.objects.filter(is_active=True).exclude(
        username=guardian_settings.ANONYMOUS_USER_NAME
    )
    groups = Group.objects.all()
    if text:
        from django.db.models import Q

        users = users.filter(
            Q(username__icontains=text)
            | Q(first_name__icontains=text)
            | Q(last_name__icontains=text)
            | Q(email__icontains=text)
        )
        groups = groups.filter(name__icontains=text)
    return list(users.order_by("username")[:limit]), list(groups.order_by("name")[:limit])
