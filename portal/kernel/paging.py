"""Every list of the portal is paged alike: `VIREO_PAGE_SIZE` rows a page, one pager
(`templates/portal/_pager.html`)."""

from django.conf import settings
from django.core.paginator import Page, Paginator


def page_get(items, number) -> Page:
    """Page `number` (any text from the URL: out of range or not a number gives the nearest
    page) of `items`, an ordered queryset or list."""
    return Paginator(items, settings.VIREO_PAGE_SIZE).get_page(number)
