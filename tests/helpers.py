"""Helpers shared by the test modules (imported like `factories`: `from helpers import GiB`).

Sizes come from the production code; HTML is read by parsing it (lxml + cssselect), so a check
does not depend on the order of attributes or on white space."""

import lxml.html

from vms.quotas import GiB

MiB = GiB // 1024
KiB = MiB // 1024

HX = {"HX-Request": "true"}  # the header htmx sends


__all__ = [
    "GiB",
    "HX",
    "KiB",
    "MiB",
    "assert_messages",
    "html_find",
    "html_one",
    "html_text",
    "parse_html",
]


def parse_html(response_or_html):
    """The document (or fragment) of a response or of an HTML string, as an lxml tree."""
    body = getattr(response_or_html, "content", response_or_html)
    if isinstance(body, bytes):
        body = body.decode()
    if not body.strip():
        return lxml.html.Element("div")
    return lxml.html.fromstring(body)  # a fragment of several elements comes wrapped in a <div>


def html_find(response_or_html, css: str) -> list:
    """The elements matching a CSS selector, in document order."""
    root = response_or_html
    if not hasattr(root, "cssselect"):
        root = parse_html(response_or_html)
    return root.cssselect(css)


def html_one(response_or_html, css: str):
    """The one element matching a CSS selector (fails when there is none or several)."""
    found = html_find(response_or_html, css)
    assert len(found) == 1, f"{len(found)} elements match {css!r}"
    return found[0]


def html_text(element) -> str:
    """An element's text, white space collapsed, as the user reads it."""
    return " ".join(element.text_content().split())


def assert_messages(response, level: str, *texts: str) -> None:
    """The action's window closed and each text shows as a message of `level` (info, error ...)."""
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#messages"
    assert "vireo:close-modal" in response["HX-Trigger-After-Swap"]
    shown = [html_text(m) for m in html_find(response, f"div.msg.{level}[role=status]")]
    for text in texts:
        assert text in shown, shown
