"""The Storage tab's storage domain windows (vms/domain_views.py): tried anonymous, without
permission, permitted, and on an object that is not there; the toolbar follows the selected
domain's status; New Domain's fields follow the Storage Type."""

import pytest
from django.test import Client
from django.urls import reverse
from factories import ClusterFactory, HostFactory, StorageDomainFactory, UserFactory, grant
from helpers import HX, GiB, assert_messages, html_find, html_one, html_text

from portal.kernel.models import Job
from storage.choices import PoolStatus, StorageDomainStatus
from storage.models import StorageDomain, StorageDomainHost
from vms.forms import NewVMForm
from vms.selectors import vm_create_choices

pytestmark = pytest.mark.django_db
SD = StorageDomainStatus
MISSING = 999_999_999

WINDOWS = ["storage:domain_edit", "storage:domain_remove", "storage:domain_attach"]


@pytest.fixture
def domain():
    host = HostFactory(name="h1")
    sd = StorageDomainFactory(name="data1", data_center=host.cluster.data_center, path="/srv/d1")
    StorageDomainHost.objects.create(
        domain=sd, host=host, status=PoolStatus.ACTIVE, total_bytes=100 * GiB, free_bytes=60 * GiB
    )
    return sd


def window_urls(sd) -> list[str]:
    urls = [reverse(name, args=[sd.pk]) for name in WINDOWS]
    urls += [reverse("storage:domain_action", args=[sd.pk, k]) for k in ("maintenance", "detach")]
    return urls


def test_anonymous_is_sent_to_login(client, domain):
    for url in [reverse("storage:domain_new"), *window_urls(domain)]:
        for method in ("get", "post"):
            response = getattr(client, method)(url, headers=HX)
            assert response.status_code == 302 and "/login/" in response["Location"]


def test_without_permission_every_window_is_404(user_client, domain):
    for url in [reverse("storage:domain_new"), *window_urls(domain)]:
        assert user_client.get(url, headers=HX).status_code == 404
        assert user_client.post(url, {"name": "x"}, headers=HX).status_code == 404
    page = user_client.get(reverse("storage:domains")).content.decode()
    assert "New Domain" not in page and "data1" not in page
    assert StorageDomain.objects.get().name == "data1" and not Job.objects.exists()


def test_a_data_center_admin_does_not_administer_its_storage(domain):
    """The chapter: DataCenterAdmin, except for the storage of that data center."""
    dc_admin = UserFactory()
    grant(dc_admin, "DataCenterAdmin", domain.data_center)
    client = Client()
    client.force_login(dc_admin)
    assert client.get(reverse("storage:domain_new"), headers=HX).status_code == 404
    assert client.get(window_urls(domain)[0], headers=HX).status_code == 404


def test_missing_domain_and_unknown_action_are_404(admin_client, domain):
    for name in WINDOWS:
        assert admin_client.get(reverse(name, args=[MISSING]), headers=HX).status_code == 404
    url = reverse("storage:domain_action", args=[domain.pk, "format"])
    assert admin_client.get(url, headers=HX).status_code == 404
    assert admin_client.post(url, headers=HX).status_code == 404


def test_selected_domain_gets_toolbar_and_per_host_pane(admin_client, domain):
    plain = admin_client.get(reverse("storage:domains"))
    toolbar = html_one(plain, "#domain-toolbar")
    enabled = [html_text(b) for b in html_find(toolbar, "button") if b.get("disabled") is None]
    assert enabled == ["New Domain"]  # nothing selected yet
    response = admin_client.get(reverse("storage:domains"), {"selected": domain.pk}, headers=HX)
    html = response.content.decode()
    assert html.startswith('<div id="domain-results"')
    buttons = {html_text(b): b.get("disabled") is None for b in html_find(response, "button")}
    assert buttons == {
        "New Domain": True,
        "Edit": True,
        "Remove": False,
        "Maintenance": True,
        "Activate": True,
        "Attach": False,
        "Detach": False,
    }
    (row,) = html_find(response, "tr.domain-row.selected")
    assert row.get("data-domain") == str(domain.pk)
    host_row = html_one(response, "#domain-details tr[data-host=h1]")
    cells = [html_text(td) for td in host_row.findall("td")]
    assert (cells[0], cells[1], cells[2], cells[4]) == ("h1", "Active", "100.0 GiB", "60.0 GiB")
    # The live refresh keeps the selection.
    assert f"selected={domain.pk}" in html_one(response, "#domain-results").get("hx-get")


def test_maintenance_domain_offers_activate_detach_remove(admin_client, domain):
    StorageDomain.objects.filter(pk=domain.pk).update(status=SD.MAINTENANCE)
    response = admin_client.get(reverse("storage:domains"), {"selected": domain.pk}, headers=HX)
    enabled = {html_text(b) for b in html_find(response, "button") if b.get("disabled") is None}
    assert enabled == {"New Domain", "Edit", "Remove", "Activate", "Detach"}


def test_new_domain_window_switches_fields_by_type(admin_client, domain):
    html = admin_client.get(reverse("storage:domain_new"), headers=HX).content.decode()
    assert "New Domain" in html and 'hx-post="/storage/domains/new/"' in html
    assert html_one(html, ".when-local input[name=path]") is not None
    assert html_one(html, ".when-nfs input[name=nfs_server]") is not None
    assert html_one(html, ".when-nfs input[name=export_path]") is not None
    options = [o.get("value") for o in html_find(html, "select[name=storage_type] option")]
    assert options == ["local", "nfs"]
    functions = [html_text(o) for o in html_find(html, "select[name=domain_function] option")]
    assert functions == ["Data", "ISO", "Export"]
    assert "<script" not in html


def test_new_domain_post_creates_a_locked_domain_and_a_job(admin_client, admin, domain):
    data = {
        "name": "local2",
        "data_center": domain.data_center_id,
        "domain_function": "iso",
        "storage_type": "local",
        "path": "/var/lib/vireo/iso",
    }
    response = admin_client.post(reverse("storage:domain_new"), data, headers=HX)
    assert_messages(response, "success", "Adding storage domain local2.")
    made = StorageDomain.objects.get(name="local2")
    assert (made.status, made.domain_function, made.path) == (
        SD.LOCKED,
        "iso",
        "/var/lib/vireo/iso",
    )
    job = Job.objects.get()
    assert (job.kind, job.user, job.params) == (
        "storage_domain_create",
        admin,
        {"domain_id": made.pk},
    )


@pytest.mark.parametrize(
    "data,field,message",
    [
        ({"storage_type": "local", "path": "../etc"}, "path", "Path must be an absolute path"),
        ({"storage_type": "local", "path": "/etc"}, "path", "Path /etc is a system directory"),
        ({"storage_type": "nfs", "export_path": "/x"}, "nfs_server", "NFS server is required."),
        (
            {"storage_type": "nfs", "nfs_server": "n", "export_path": "x"},
            "export_path",
            "Export Path must be an absolute path",
        ),
    ],
)
def test_new_domain_bad_input_shows_by_the_field(admin_client, domain, data, field, message):
    form = {"name": "x", "data_center": domain.data_center_id, "domain_function": "data", **data}
    response = admin_client.post(reverse("storage:domain_new"), form, headers=HX)
    assert response.status_code == 200 and "HX-Retarget" not in response
    label = html_one(response, f"label:has(> [name={field}])")
    assert message in html_text(html_one(label, ".error"))
    assert StorageDomain.objects.count() == 1 and not Job.objects.exists()


def test_remove_window_offers_format_domain_and_is_refused_while_active(admin_client, domain):
    url = reverse("storage:domain_remove", args=[domain.pk])
    html = admin_client.get(url, headers=HX).content.decode()
    assert "Cannot remove storage domain data1: it is Active." in html
    assert 'type="submit"' not in html
    response = admin_client.post(url, {"format_domain": "on"}, headers=HX)
    assert "Cannot remove storage domain data1: it is Active." in response.content.decode()
    StorageDomain.objects.filter(pk=domain.pk).update(status=SD.MAINTENANCE)
    html = admin_client.get(url, headers=HX).content.decode()
    assert "Format Domain, i.e. Storage Content will be lost!" in html
    response = admin_client.post(url, {"format_domain": "on"}, headers=HX)
    assert_messages(response, "success", "Removing storage domain data1.")
    job = Job.objects.get()
    assert job.params == {
        "domain_id": domain.pk,
        "from_status": SD.MAINTENANCE,
        "format_domain": True,
    }
    assert StorageDomain.objects.get(pk=domain.pk).status == SD.LOCKED


def test_maintenance_window_asks_then_starts_the_job(admin_client, domain):
    url = reverse("storage:domain_action", args=[domain.pk, "maintenance"])
    html = admin_client.get(url, headers=HX).content.decode()
    assert "Maintenance Storage Domain(s)" in html and "<strong>data1</strong>" in html
    response = admin_client.post(url, headers=HX)
    assert_messages(response, "success", "Moving storage domain data1 to maintenance.")
    assert StorageDomain.objects.get(pk=domain.pk).status == SD.PREPARING_FOR_MAINTENANCE
    again = admin_client.post(url, headers=HX)
    assert_messages(
        again,
        "error",
        "Cannot move storage domain data1 to maintenance: it is Preparing For Maintenance.",
    )
    assert Job.objects.count() == 1


def test_edit_window_saves_name_and_description(admin_client, domain):
    url = reverse("storage:domain_edit", args=[domain.pk])
    response = admin_client.post(url, {"name": "data9", "description": "fast"}, headers=HX)
    assert_messages(response, "success", "Storage domain data9 saved.")
    domain.refresh_from_db()
    assert (domain.name, domain.description) == ("data9", "fast")


def test_new_vm_offers_only_active_data_domains(admin, domain):
    dc = domain.data_center
    StorageDomainFactory(data_center=dc, name="iso1", domain_function="iso")
    StorageDomainFactory(data_center=dc, name="export1", domain_function="export")
    StorageDomainFactory(data_center=dc, name="resting", status=SD.MAINTENANCE)
    ClusterFactory(data_center=dc)
    form = NewVMForm(choices=vm_create_choices(admin))
    assert [d.name for d in form.fields["storage_domain"].queryset] == ["data1"]
