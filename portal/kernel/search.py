"""What every search box accepts before it reaches a query: a bounded length and no control
characters (PostgreSQL refuses NUL in text; a megabyte of LIKE pattern only burns the
database). A refused search shows its message above the results and matches nothing."""

import re

SEARCH_MAX = 200
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SearchError(ValueError):
    """A search the box cannot run, with the message to show above the results."""


def search_text(value) -> str:
    """The search text, stripped; SearchError when it is too long or holds control characters."""
    text = (value or "").strip() if isinstance(value, str) else ""
    if len(text) > SEARCH_MAX:
        raise SearchError(f"The search is too long: at most {SEARCH_MAX} characters.")
    if _CONTROL_RE.search(text):
        raise SearchError("The search may not contain control characters.")
    return text
