from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _builtin_roles(sender, **kwargs):
    from .services import roles_ensure_builtin

    roles_ensure_builtin()


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Users, roles and permissions"

    def ready(self) -> None:
        from portal.kernel.querysets import restriction_resolver_set

        from .permissions import restrict

        # Model.objects.restrict(user, action) answers through the one resolver.
        restriction_resolver_set(restrict)
        post_migrate.connect(_builtin_roles, sender=self)
