from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal.shell import views
from portal.shell.security import LoginForm
from storage import urls as storage_urls
from vms import disk_views, domain_views, iso_views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChange.as_view(), name="password_change"),
    path("events/", views.event_list, name="events"),
    path("jobs/", views.job_list, name="jobs"),
    path("vms/", include("vms.urls")),
    # The Storage tab: storage's Disks list, vms' domain list and windows (vms owns the actions on
    # domains and disks, and their toolbar reads its catalogue), one namespace.
    path(
        "storage/",
        include(
            (
                iso_views.image_urlpatterns
                + domain_views.domain_urlpatterns
                + storage_urls.urlpatterns
                + disk_views.disk_urlpatterns,
                storage_urls.app_name,
            ),
            namespace="storage",
        ),
    ),
    path("", include("accounts.urls")),
]
