"""The one place a window answers its OK, shared by the views of vms, storage and accounts (it
sits in the kernel so that no app imports the UI shell).

A window's view parses its input with a form, then hands one service call to these helpers:
a refusal (`ActionRefused`) goes on the form as a non-field error (the window shows it and
stays open), or, for a window without input, becomes the message the closed window leaves.
No view catches ActionRefused itself.
"""

from collections.abc import Callable

from django.contrib import messages as django_messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django_htmx.http import trigger_client_event

from .errors import ActionRefused


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


def outcome(call: Callable[[], object], success: Callable[[object], str]) -> tuple[str, str]:
    """Call one service: ("success", success(result)), or ("error", the refusal's message)."""
    try:
        result = call()
    except ActionRefused as exc:
        return ("error", str(exc))
    return ("success", success(result))


def form_window(
    request,
    form,
    call: Callable[[dict], object],
    *,
    success: Callable[[object], str],
    template: str,
    context: dict | None = None,
    redirect_to: str = "vms:list",
) -> HttpResponse:
    """A window with a form: on a valid POST call `call(cleaned_data)` (one service); done, the
    window closes with `success(result)`; refused, the refusal becomes the form's non-field
    error and the window is shown again, as on GET."""
    if request.method == "POST" and form.is_valid():
        try:
            result = call(form.cleaned_data)
        except ActionRefused as exc:
            form.add_error(None, str(exc))
        else:
            return modal_done(request, [("success", success(result))], redirect_to=redirect_to)
    return render(request, template, {"form": form, **(context or {})})


def confirm_window(
    request,
    call: Callable[[], object],
    *,
    success: Callable[[object], str],
    template: str,
    context: dict,
    redirect_to: str = "vms:list",
) -> HttpResponse:
    """A confirmation window (OK / Cancel, no input): GET shows it, POST calls the service and
    closes it with the outcome's message."""
    if request.method == "POST":
        return modal_done(request, [outcome(call, success)], redirect_to=redirect_to)
    return render(request, template, context)
