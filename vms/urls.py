from django.urls import path

from . import quota_views, snapshot_views, views

app_name = "vms"
urlpatterns = [
    path("", views.vm_list, name="list"),
    path("table/", views.vm_table, name="table"),
    path("new/", views.vm_new, name="new"),
    path("action/<str:action>/", views.vm_action, name="action"),
    path("<int:pk>/", views.vm_detail, name="detail"),
    path("<int:pk>/row/", views.vm_row, name="row"),
    path("<int:pk>/edit/", views.vm_edit, name="edit"),
    path("<int:pk>/snapshots/create/", snapshot_views.snapshot_create, name="snapshot_create"),
    path(
        "<int:pk>/snapshots/<int:sid>/preview/",
        snapshot_views.snapshot_preview,
        name="snapshot_preview",
    ),
    path(
        "<int:pk>/snapshots/<int:sid>/clone/", snapshot_views.snapshot_clone, name="snapshot_clone"
    ),
    path(
        "<int:pk>/snapshots/<int:sid>/delete/",
        snapshot_views.snapshot_delete,
        name="snapshot_delete",
    ),
    path(
        "<int:pk>/snapshots/<str:action>/",
        snapshot_views.snapshot_end_preview,
        name="snapshot_end_preview",
    ),
    path("<int:pk>/details/<str:tab>/", views.vm_details_pane, name="details"),
    path("hosts/", views.host_list, name="hosts"),
    path("hosts/new/", views.host_new, name="host_new"),
    path("clusters/", views.cluster_list, name="clusters"),
    path("datacenters/", views.datacenter_list, name="datacenters"),
    path("clusters/<int:pk>/edit/", views.cluster_edit, name="cluster_edit"),
    path("quotas/", quota_views.quota_list, name="quotas"),
    path("quotas/<int:pk>/edit/", quota_views.quota_edit, name="quota_edit"),
]
