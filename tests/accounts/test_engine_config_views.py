"""Configure > Engine Configuration: a SuperUser (manage_roles on System) sees every key with
its value, default and description and edits one in a window; other administrators do not
see it (404 on the window), non-administrators get 403."""

import pytest
from accounts_views_support import client_for
from django.urls import reverse
from factories import SuperUserFactory, UserFactory, grant
from helpers import HX, html_find, html_text

from accounts.models import System
from portal.kernel import config
from portal.kernel.config import KEYS, config_get
from portal.kernel.models import ConfigValue, Event

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    config.config_reset_cache()
    yield
    config.config_reset_cache()


def engine_rows(response) -> dict[str, list[str]]:
    rows = {}
    for row in html_find(response, "table.grid tbody tr"):
        cells = [html_text(td) for td in row.findall("td")]
        rows[cells[0]] = cells[1:4]
    return rows


def test_superuser_sees_every_key_with_value_default_and_description():
    client = client_for(SuperUserFactory())
    ConfigValue.objects.create(key="AutoConvergence", value=True)
    response = client.get(reverse("configure"), {"tab": "engine"})
    assert response.status_code == 200
    rows = engine_rows(response)
    assert list(rows) == list(KEYS)
    assert rows["AutoConvergence"] == ["true", "false", KEYS["AutoConvergence"].description]
    assert rows["DefaultMaximumMigrationDowntime"][:2] == ["500 ms", "500 ms"]
    html = response.content.decode()
    assert reverse("engine_config_edit", args=["HostTimeDriftInSec"]) in html


def test_superuser_edits_a_value_in_a_window():
    root = SuperUserFactory()
    client = client_for(root)
    url = reverse("engine_config_edit", args=["MigrationPolicy"])
    window = client.get(url, headers=HX)
    assert "Edit Engine Configuration" in window.content.decode()
    assert [o.get("value") for o in html_find(window, "select[name=value] option")] == [
        "legacy",
        "minimal_downtime",
        "post_copy",
        "suspend_workload",
    ]
    done = client.post(url, {"value": "suspend_workload"}, headers=HX)
    assert "MigrationPolicy set to Suspend workload if needed." in done.content.decode()
    assert config_get("MigrationPolicy") == "suspend_workload"
    assert Event.objects.get().user == root


def test_bad_value_keeps_the_window_open_and_changes_nothing():
    client = client_for(SuperUserFactory())
    url = reverse("engine_config_edit", args=["MaxNumberOfConcurrentMigrations"])
    response = client.post(url, {"value": "500"}, headers=HX)
    assert response.status_code == 200
    assert "less than or equal to 32" in response.content.decode()
    assert not ConfigValue.objects.exists() and not Event.objects.exists()


def test_a_boolean_key_is_a_check_box():
    client = client_for(SuperUserFactory())
    url = reverse("engine_config_edit", args=["EnableHostTimeDrift"])
    assert html_find(client.get(url, headers=HX), "input[type=checkbox][name=value]")
    client.post(url, {"value": "on"}, headers=HX)
    assert config_get("EnableHostTimeDrift") is True
    client.post(url, {}, headers=HX)
    assert config_get("EnableHostTimeDrift") is False


def test_an_unknown_key_is_404():
    client = client_for(SuperUserFactory())
    assert client.get(reverse("engine_config_edit", args=["Nope"]), headers=HX).status_code == 404


def test_other_administrators_do_not_see_it():
    dcadmin = UserFactory(username="dcadmin")
    grant(dcadmin, "DataCenterAdmin", System.get())
    client = client_for(dcadmin)
    page = client.get(reverse("configure"), {"tab": "engine"})
    assert page.status_code == 200
    assert not engine_rows(page)
    assert "?tab=engine" not in page.content.decode()  # no sub-tab either
    url = reverse("engine_config_edit", args=["AutoConvergence"])
    assert client.get(url, headers=HX).status_code == 404
    assert client.post(url, {"value": "on"}, headers=HX).status_code == 404
    assert not ConfigValue.objects.exists()


def test_users_are_refused():
    client = client_for(UserFactory())
    assert client.get(reverse("configure"), {"tab": "engine"}).status_code == 403
    url = reverse("engine_config_edit", args=["AutoConvergence"])
    assert client.post(url, {"value": "on"}, headers=HX).status_code == 403
    assert not ConfigValue.objects.exists()
