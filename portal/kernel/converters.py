"""Object ids in URLs and query strings. An id is 1 to 19 ASCII digits that fit the database's
64-bit key; anything else (99999999999999999999, "²", "-1") is no id at all, so the URL does
not match (a 404) or the parameter is ignored, before any query is made."""

import re

from django.urls import register_converter

ID_MAX = 2**63 - 1
_ID_RE = re.compile(r"[0-9]{1,19}")


def parse_id(value) -> int | None:
    """The id that `value` (a query-string value) spells, or None."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        return None
    number = int(value)
    return number if number <= ID_MAX else None


class IdConverter:
    """`<id:pk>`: like `<int:pk>`, but only values a primary key can hold."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = parse_id(value)
        if number is None:
            raise ValueError(value)  # the pattern does not match: 404
        return number

    def to_url(self, value) -> str:
        return str(int(value))


register_converter(IdConverter, "id")
