from django.urls import path

from . import views

app_name = "storage"
urlpatterns = [
    path("", views.domain_list, name="domains"),
    path("disks/", views.disk_list, name="disks"),
    path("disks/<int:pk>/attach/", views.disk_attach, name="disk_attach"),
    path("disks/<int:pk>/remove/", views.disk_remove, name="disk_remove"),
]
