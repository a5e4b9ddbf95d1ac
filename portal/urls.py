from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal.shell import views
from portal.shell.security import LoginForm

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChange.as_view(), name="password_change"),
    path("events/", views.event_list, name="events"),
    path("jobs/", views.job_list, name="jobs"),
    path("vms/", include("vms.urls")),
    path("storage/", include("storage.urls")),
    path("", include("accounts.urls")),
]
