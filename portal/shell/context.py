"""Template context for every page: which portal's navigation to show."""

from accounts.permissions import is_admin


def portal_nav(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or request.headers.get("HX-Request"):
        return {}
    return {"nav_admin": is_admin(user)}
