from django.urls import path

import portal.kernel.converters  # noqa: F401  (registers the <id:...> path converter)

from . import views

urlpatterns = [
    path("user/", views.user_portal, name="user_portal"),
    path("user/vms/<id:pk>/card/", views.user_vm_card, name="user_vm_card"),
    path("user/vms/<id:pk>/snapshots/", views.user_vm_snapshots, name="user_vm_snapshots"),
    path("configure/", views.configure, name="configure"),
    path("configure/engine/<str:key>/edit/", views.engine_config_edit, name="engine_config_edit"),
    path("configure/roles/new/", views.role_edit, name="role_new"),
    path("configure/roles/<id:pk>/edit/", views.role_edit, name="role_edit"),
    path("configure/roles/<id:pk>/remove/", views.role_remove, name="role_remove"),
    path("permissions/<str:kind>/<id:pk>/", views.permission_list, name="permissions"),
    path("permissions/<str:kind>/<id:pk>/add/", views.permission_add, name="permission_add"),
    path(
        "permissions/<str:kind>/<id:pk>/remove/<str:row_kind>/<id:row_id>/",
        views.permission_remove,
        name="permission_remove",
    ),
]
