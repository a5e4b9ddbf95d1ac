"""Checks shared by every service that stores text typed by a user.

Whatever a user types may end up in a libvirt domain definition (XML) or the database. XML 1.0
cannot carry most control characters ("PCDATA invalid Char"), so one is refused up front with
a clear message, before anything is changed.
"""

import re

from django.core.exceptions import ValidationError

from .errors import ActionRefused

# C0 controls (tab, line feed and carriage return only where a text may span lines), DEL, C1
# controls, lone surrogates and the two non-characters XML forbids.
_CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff"
_SINGLE_LINE_RE = re.compile(rf"[\t\n\r{_CONTROL}]")
_MULTI_LINE_RE = re.compile(rf"[{_CONTROL}]")


def control_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character of `value` that may not be stored, or None."""
    match = (_MULTI_LINE_RE if multiline else _SINGLE_LINE_RE).search(value or "")
    return match.group() if match else None


def text_check(value, label: str, *, max_length: int | None = None, multiline: bool = False) -> str:
    """Return `value` (stripped) or refuse it: no control characters, at most `max_length`."""
    value = str(value or "").strip()
    bad = control_character(value, multiline=multiline)
    if bad is not None:
        raise ActionRefused(
            f"{label} contains a control character (U+{ord(bad):04X}); remove it and try again."
        )
    if max_length is not None and len(value) > max_length:
        raise ActionRefused(
            f"{label} is too long: {len(value):,} characters, at most {max_length:,}."
        )
    return value


def control_characters_strip(value: str) -> str:
    """`value` without the characters XML cannot carry (for text stored before they were
    refused, on its way into a libvirt definition)."""
    return _MULTI_LINE_RE.sub("", value or "")


def no_control_characters(value) -> None:
    """Django field validator with the same rule, so a form shows the message next to the field."""
    bad = control_character(str(value or ""))
    if bad is not None:
        raise ValidationError(
            f"Contains a control character (U+{ord(bad):04X}); remove it and try again."
        )
