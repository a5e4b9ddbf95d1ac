from django.urls import path

import portal.kernel.converters  # noqa: F401  (registers the <id:...> path converter)

from . import views

app_name = "storage"
urlpatterns = [
    path("disks/", views.disk_list, name="disks"),
]
