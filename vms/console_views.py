"""The console window (both portals) and the native client's .vv file. Each opening is one
service call (vms.console.console_open); a VM out of reach (no "Connect to the console" on it)
is a 404."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.kernel.errors import ActionRefused

from .console import ConsoleInUse, console_open
from .models import VirtualMachine


def _console_vm(request, pk: int) -> VirtualMachine:
    return get_object_or_404(
        VirtualMachine.objects.select_related("host").restrict(request.user, "console"), pk=pk
    )


@never_cache
@require_GET
@login_required
def vm_console(request, pk: int):
    """The console window: sets a one-time ticket and gives it (and its graphics password) to
    this page's noVNC, which opens the console's websocket. `?takeover=1` takes over another
    user's console (for those who may)."""
    vm = _console_vm(request, pk)
    takeover = request.GET.get("takeover") == "1"
    context = {"vm": vm, "takeover": takeover}
    try:
        opening = console_open(vm_id=vm.pk, user=request.user, takeover=takeover)
    except ConsoleInUse as exc:
        context.update(refusal=str(exc), may_take_over=exc.may_take_over)
        return render(request, "vms/console.html", context)
    except ActionRefused as exc:
        context["refusal"] = str(exc)
        return render(request, "vms/console.html", context)
    context.update(
        opening=opening,
        ticket_seconds=int((opening.expires_at - timezone.now()).total_seconds()),
    )
    return render(request, "vms/console.html", context)


@never_cache
@require_GET
@login_required
def vm_console_file(request, pk: int):
    """Console Options > native client: a remote-viewer (.vv) file with a fresh ticket (SPICE
    when the VM has it, else VNC), deleted by remote-viewer once read."""
    vm = _console_vm(request, pk)
    takeover = request.GET.get("takeover") == "1"
    try:
        opening = console_open(vm_id=vm.pk, user=request.user, takeover=takeover, native=True)
    except ActionRefused as exc:
        return render(request, "vms/console.html", {"vm": vm, "refusal": str(exc)})
    response = HttpResponse(vv_file(opening), content_type="application/x-virt-viewer")
    response["Content-Disposition"] = 'attachment; filename="console.vv"'
    return response


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())[:255]


def vv_file(opening) -> str:
    """The [virt-viewer] file of a console opening: values are ours, the host's, or (the
    title) the VM's name cut to its printable characters, so none can start a line."""
    lines = [
        "[virt-viewer]",
        f"type={opening.graphics.type}",
        f"host={opening.reach.client_address}",
        f"port={opening.graphics.port}",
        f"password={opening.password}",
        "delete-this-file=1",
        f"title={_printable(opening.vm.name)}:%d",
        "toggle-fullscreen=shift+f11",
        "release-cursor=shift+f12",
        "secure-attention=ctrl+alt+end",
        # When the ticket's password stops working (remote-viewer reads no expiry of its own).
        f"# valid until {opening.expires_at.strftime('%Y-%m-%d %H:%M:%S %Z')}",
    ]
    return "\n".join(lines) + "\n"
