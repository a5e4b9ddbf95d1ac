from django.urls import path

from . import views

urlpatterns = [
    path("user/", views.user_portal, name="user_portal"),
    path("user/vms/<int:pk>/card/", views.user_vm_card, name="user_vm_card"),
    path("user/vms/<int:pk>/snapshots/", views.user_vm_snapshots, name="user_vm_snapshots"),
    path("configure/", views.configure, name="configure"),
    path("configure/roles/new/", views.role_edit, name="role_new"),
    path("configure/roles/<int:pk>/edit/", views.role_edit, name="role_edit"),
    path("configure/roles/<int:pk>/remove/", views.role_remove, name="role_remove"),
    path("permissions/<str:kind>/<int:pk>/", views.permission_list, name="permissions"),
    path("permissions/<str:kind>/<int:pk>/add/", views.permission_add, name="permission_add"),
    path(
        "permissions/<str:kind>/<int:pk>/remove/<str:row_kind>/<int:row_id>/",
        views.permission_remove,
        name="permission_remove",
    ),
]
