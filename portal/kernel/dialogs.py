"""The answer every app's window gives to its OK, shared by the views of vms, storage and
accounts; it sits in the kernel so that no app imports the UI shell."""

from django.contrib import messages as django_messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django_htmx.http import trigger_client_event


def modal_done(
    request, results: list[tuple[str, str]], redirect_to: str = "vms:list"
) -> HttpResponse:
    """Answer a window's OK: close the window and show one message per object acted on.

    `results` holds (level, text) pairs, level "success" or "error"."""
    if not request.htmx:
        for level, text in results:
            (django_messages.success if level == "success" else django_messages.error)(
                request, text
            )
        return redirect(redirect_to)
    response = render(request, "portal/_messages.html", {"results": results})
    response["HX-Retarget"] = "#messages"
    response["HX-Reswap"] = "innerHTML"
    return trigger_client_event(response, "vireo:close-modal", after="swap")
