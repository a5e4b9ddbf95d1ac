"""Per-request memo of the user's grants, so the pages of one request ask the database once
per action (the list, its count, the rows' actions, the toolbar)."""


class PermissionCacheMiddleware:
    """Give the request's user an empty grants memo; it lives as long as the request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            user._vireo_grants = {}
        return self.get_response(request)
