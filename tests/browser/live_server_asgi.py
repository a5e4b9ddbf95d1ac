"""The portal's ASGI application as the browser suite serves it under daphne.

The suite flushes the test database after every test and post_migrate re-creates the content
types with new ids, while daphne lives for the whole session: its ContentType cache would keep
the old ids, and every object permission (keyed by content type) would stop matching from the
second test on. Here the cache is forgotten before each lookup. Production never re-creates
content types under a running server, so portal.asgi keeps its cache.
"""

from functools import wraps

from portal.asgi import application

__all__ = ["application"]


def _uncached(method):
    @wraps(method)
    def lookup(self, *args, **kwargs):
        self.clear_cache()
        return method(self, *args, **kwargs)

    return lookup


def _forget_content_types() -> None:
    from django.contrib.contenttypes.models import ContentTypeManager  # after django.setup()

    for name in ("get_for_model", "get_for_models", "get_for_id", "get_by_natural_key"):
        setattr(ContentTypeManager, name, _uncached(getattr(ContentTypeManager, name)))


_forget_content_types()
