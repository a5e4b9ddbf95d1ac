"""Who may enter which portal. Holding an administrative role anywhere opens the
Administration Portal; user roles lead to the User Portal."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .permissions import is_admin


def admin_portal_required(view):
    """Administration Portal pages: refused cleanly (403 with a way out) for users without an
    administrative role; objects out of reach are 404 inside the views themselves."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not is_admin(request.user):
            return render(request, "portal/admin_refused.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper
