from django.urls import path

import portal.kernel.converters  # noqa: F401  (registers the <id:...> path converter)

from . import (
    affinity_views,
    console_views,
    host_device_views,
    inventory_views,
    network_views,
    quota_views,
    snapshot_views,
    views,
)

app_name = "vms"
urlpatterns = [
    path("", views.vm_list, name="list"),
    path("table/", views.vm_table, name="table"),
    path("new/", views.vm_new, name="new"),
    path("action/<str:action>/", views.vm_action, name="action"),
    path("<id:pk>/", views.vm_detail, name="detail"),
    path("<id:pk>/row/", views.vm_row, name="row"),
    path("<id:pk>/edit/", views.vm_edit, name="edit"),
    path("<id:pk>/console/", console_views.vm_console, name="console"),
    path("<id:pk>/console.vv", console_views.vm_console_file, name="console_file"),
    path("<id:pk>/snapshots/create/", snapshot_views.snapshot_create, name="snapshot_create"),
    path(
        "<id:pk>/snapshots/<id:sid>/preview/",
        snapshot_views.snapshot_preview,
        name="snapshot_preview",
    ),
    path("<id:pk>/snapshots/<id:sid>/clone/", snapshot_views.snapshot_clone, name="snapshot_clone"),
    path(
        "<id:pk>/snapshots/<id:sid>/delete/",
        snapshot_views.snapshot_delete,
        name="snapshot_delete",
    ),
    path(
        "<id:pk>/snapshots/<str:action>/",
        snapshot_views.snapshot_end_preview,
        name="snapshot_end_preview",
    ),
    path("<id:pk>/details/<str:tab>/", views.vm_details_pane, name="details"),
    path("<id:pk>/nics/new/", network_views.nic_new, name="nic_new"),
    path("<id:pk>/nics/<id:nid>/edit/", network_views.nic_edit, name="nic_edit"),
    path("<id:pk>/nics/<id:nid>/remove/", network_views.nic_remove, name="nic_remove"),
    path("<id:pk>/hostdevs/add/", host_device_views.hostdev_add, name="hostdev_add"),
    path("<id:pk>/hostdevs/remove/", host_device_views.hostdev_remove, name="hostdev_remove"),
    path("<id:pk>/hostdevs/pin/", host_device_views.hostdev_pin, name="hostdev_pin"),
    path("hosts/", views.host_list, name="hosts"),
    path("hosts/new/", views.host_new, name="host_new"),
    path("hosts/<id:pk>/edit/", inventory_views.host_edit, name="host_edit"),
    path("hosts/<id:pk>/remove/", inventory_views.host_remove, name="host_remove"),
    path("hosts/<id:pk>/maintenance/", inventory_views.host_maintenance, name="host_maintenance"),
    path("hosts/<id:pk>/activate/", inventory_views.host_activate, name="host_activate"),
    path(
        "hosts/<id:pk>/confirm-rebooted/",
        inventory_views.host_confirm_rebooted,
        name="host_confirm_rebooted",
    ),
    path("clusters/", views.cluster_list, name="clusters"),
    path("clusters/new/", inventory_views.cluster_new, name="cluster_new"),
    path("datacenters/", views.datacenter_list, name="datacenters"),
    path("datacenters/new/", inventory_views.datacenter_new, name="datacenter_new"),
    path("datacenters/<id:pk>/edit/", inventory_views.datacenter_edit, name="datacenter_edit"),
    path(
        "datacenters/<id:pk>/remove/", inventory_views.datacenter_remove, name="datacenter_remove"
    ),
    path("datacenters/<id:pk>/networks/", network_views.network_list, name="networks"),
    path("networks/", network_views.network_list_all, name="networks_all"),
    path("datacenters/<id:pk>/networks/new/", network_views.network_new, name="network_new"),
    path("networks/<id:pk>/edit/", network_views.network_edit, name="network_edit"),
    path("networks/<id:pk>/remove/", network_views.network_remove, name="network_remove"),
    path("networks/<id:pk>/profiles/", network_views.network_profiles, name="network_profiles"),
    path("networks/<id:pk>/profiles/new/", network_views.vnic_profile_new, name="vnic_profile_new"),
    path("profiles/<id:pk>/edit/", network_views.vnic_profile_edit, name="vnic_profile_edit"),
    path("profiles/<id:pk>/remove/", network_views.vnic_profile_remove, name="vnic_profile_remove"),
    path("clusters/<id:pk>/edit/", views.cluster_edit, name="cluster_edit"),
    path("clusters/<id:pk>/remove/", inventory_views.cluster_remove, name="cluster_remove"),
    path("clusters/<id:pk>/details/<str:tab>/", views.cluster_details, name="cluster_details"),
    path(
        "clusters/<id:pk>/affinity-groups/", affinity_views.affinity_groups, name="affinity_groups"
    ),
    path(
        "clusters/<id:pk>/affinity-groups/new/",
        affinity_views.affinity_group_new,
        name="affinity_group_new",
    ),
    path(
        "affinity-groups/<id:gid>/edit/",
        affinity_views.affinity_group_edit,
        name="affinity_group_edit",
    ),
    path(
        "affinity-groups/<id:gid>/remove/",
        affinity_views.affinity_group_remove,
        name="affinity_group_remove",
    ),
    path("quotas/", quota_views.quota_list, name="quotas"),
    path("quotas/<id:pk>/edit/", quota_views.quota_edit, name="quota_edit"),
]
