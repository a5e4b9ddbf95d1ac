"""A live refresh of a VM's row or details pane that arrives after the VM is gone is answered
204 with X-Vireo-Gone (the page takes the row or pane off), not 404; the same answer for a VM
out of reach, so the answer tells nothing of other users' VMs. Without the page's live header
the URLs keep answering 404."""

import pytest
from django.urls import reverse

LIVE = {"HTTP_HX_REQUEST": "true", "HTTP_X_VIREO_LIVE": "1"}


def urls(pk: int) -> list[str]:
    return [reverse("vms:row", args=[pk]), reverse("vms:details", args=[pk, "general"])]


@pytest.mark.django_db
def test_a_live_refresh_of_a_removed_vm_is_told_it_is_gone(admin_client, make_vm):
    vm = make_vm()
    pk = vm.pk
    for url in urls(pk):
        assert admin_client.get(url, **LIVE).status_code == 200
    vm.disks.all().delete()
    vm.delete()
    for url in urls(pk):
        live = admin_client.get(url, **LIVE)
        assert live.status_code == 204
        assert live["X-Vireo-Gone"] == "1"
        assert live.content == b""
        plain = admin_client.get(url, HTTP_HX_REQUEST="true")
        assert plain.status_code == 404
        assert "X-Vireo-Gone" not in plain


@pytest.mark.django_db
def test_a_vm_out_of_reach_gets_the_same_answer_as_a_removed_one(user_client, make_vm):
    vm = make_vm()
    for url in urls(vm.pk):
        live = user_client.get(url, **LIVE)
        assert (live.status_code, live.get("X-Vireo-Gone"), live.content) == (204, "1", b"")
        assert user_client.get(url).status_code == 404
