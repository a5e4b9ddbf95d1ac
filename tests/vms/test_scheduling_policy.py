"""Edit Cluster's Scheduling Policy tab (vms/scheduling_policy.py): the policy and its
properties typed and checked (a clear message, nothing changed), and the cluster's General
sub-tab showing them."""

import pytest
from django.urls import reverse
from factories import ClusterFactory, UserFactory, grant
from helpers import HX, assert_messages, html_find, html_one, html_text

from portal.kernel.errors import ActionRefused
from vms import services
from vms.choices import SchedulingPolicy
from vms.models import Cluster
from vms.scheduling_policy import scheduling_policy_check

pytestmark = pytest.mark.django_db

TAB = {
    "scheduling_policy": "power_saving",
    "high_utilization": "75",
    "low_utilization": "15",
    "cpu_overcommit_duration_minutes": "5",
    "max_free_memory_for_over_utilized": "1024",
    "min_free_memory_for_under_utilized": "8192",
}


def test_the_check_types_the_properties():
    assert scheduling_policy_check(TAB) == {
        "scheduling_policy": "power_saving",
        "high_utilization": 75,
        "low_utilization": 15,
        "cpu_overcommit_duration_minutes": 5,
        "max_free_memory_for_over_utilized": 1024,
        "min_free_memory_for_under_utilized": 8192,
    }
    assert scheduling_policy_check({}) == {}  # nothing given: nothing changes
    assert scheduling_policy_check({"max_free_memory_for_over_utilized": ""}) == {
        "max_free_memory_for_over_utilized": None  # empty: memory not considered
    }


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"scheduling_policy": "vm_evenly"}, "Scheduling Policy must be one of none, evenly_"),
        ({"scheduling_policy": ""}, "Scheduling Policy must be one of"),
        ({"high_utilization": "101"}, "HighUtilization must be between 0 and 100 %."),
        ({"high_utilization": ""}, "HighUtilization is required."),
        ({"low_utilization": "-1"}, "LowUtilization must be between 0 and 100 %."),
        ({"high_utilization": "8x"}, "HighUtilization must be a whole number."),
        ({"high_utilization": True}, "HighUtilization must be a whole number."),
        ({"cpu_overcommit_duration_minutes": "0"}, "between 1 and 99 minutes"),
        ({"cpu_overcommit_duration_minutes": "100"}, "between 1 and 99 minutes"),
        ({"max_free_memory_for_over_utilized": "99999999"}, "between 0 and 16,777,216 MB"),
        ({"low_utilization": "75"}, "LowUtilization (75 %) must be under HighUtilization (75 %)."),
        (
            {"max_free_memory_for_over_utilized": "8192"},
            "MaxFreeMemoryForOverUtilized (8,192 MB) must be under MinFreeMemoryForUnderUtilized "
            "(8,192 MB): a host cannot be over- and under-utilized at once.",
        ),
    ],
)
def test_bad_properties_are_refused_in_their_own_names(bad, words):
    with pytest.raises(ActionRefused) as refused:
        scheduling_policy_check({**TAB, **bad})
    assert words in str(refused.value)


def test_the_cross_checks_read_the_clusters_values_for_what_is_not_given():
    cluster = ClusterFactory(high_utilization=60, min_free_memory_for_under_utilized=2048)
    with pytest.raises(ActionRefused, match=r"LowUtilization \(60 %\) must be under"):
        scheduling_policy_check({"low_utilization": 60}, cluster)
    with pytest.raises(ActionRefused, match="MaxFreeMemoryForOverUtilized"):
        scheduling_policy_check({"max_free_memory_for_over_utilized": 4096}, cluster)
    with pytest.raises(
        ActionRefused, match=r"LowUtilization \(70 %\) must be under HighUtilization \(60 %\)"
    ):
        services.cluster_update(
            cluster_id=cluster.pk,
            user=None,
            shutdown_reason_enabled=False,
            shutdown_timeout=120,
            scheduling={"scheduling_policy": "power_saving", "low_utilization": 70},
        )
    assert Cluster.objects.get(pk=cluster.pk).scheduling_policy == SchedulingPolicy.NONE


def test_the_edit_cluster_window_saves_the_scheduling_policy_tab(admin_client):
    cluster = ClusterFactory(name="prod")
    url = reverse("vms:cluster_edit", args=[cluster.pk])
    window = admin_client.get(url, headers=HX)
    tab = [
        t
        for t in html_find(window, "fieldset.side-tab-panel")
        if "Scheduling Policy" in (html_text(t.cssselect("legend")[0]))
    ][0]
    assert [html_text(o) for o in tab.cssselect("select[name=scheduling_policy] option")] == [
        "none",
        "evenly_distributed",
        "power_saving",
    ]
    labels = [html_text(label) for label in tab.cssselect("label")]
    for name in (
        "HighUtilization (%)",
        "LowUtilization (%)",
        "CpuOverCommitDurationMinutes",
        "MaxFreeMemoryForOverUtilized (MB)",
        "MinFreeMemoryForUnderUtilized (MB)",
    ):
        assert any(label.startswith(name) for label in labels), (name, labels)
    form = {"name": "prod", "shutdown_timeout": 120, **TAB}
    assert_messages(admin_client.post(url, form, headers=HX), "success", "Cluster prod saved.")
    saved = Cluster.objects.values(*TAB).get(pk=cluster.pk)
    assert saved == {k: v if k == "scheduling_policy" else int(v) for k, v in TAB.items()}
    before = Cluster.objects.values().get(pk=cluster.pk)
    for bad, words in (
        ({"high_utilization": "150"}, "HighUtilization must be between 0 and 100 %."),
        ({"low_utilization": "80"}, "LowUtilization (80 %) must be under HighUtilization (75 %)."),
        ({"scheduling_policy": "fastest"}, "Select a valid choice."),
        ({"cpu_overcommit_duration_minutes": ""}, "CpuOverCommitDurationMinutes is required."),
    ):
        response = admin_client.post(url, {**form, **bad}, headers=HX)
        assert response.status_code == 200 and "saved" not in response.content.decode()
        assert words in response.content.decode()
        assert Cluster.objects.values().get(pk=cluster.pk) == before
    # A window that knows no Scheduling Policy tab leaves it as it is.
    assert_messages(
        admin_client.post(url, {"name": "prod", "shutdown_timeout": 60}, headers=HX),
        "success",
        "Cluster prod saved.",
    )
    assert Cluster.objects.values(*TAB).get(pk=cluster.pk) == saved


def test_the_general_sub_tab_shows_the_policy_and_the_properties_it_uses(admin_client):
    cluster = ClusterFactory(name="prod")
    url = reverse("vms:cluster_details", args=[cluster.pk, "general"])
    pane = admin_client.get(url, headers=HX)
    rows = html_one(pane, "dl.scheduling-props")
    assert [html_text(e) for e in rows.cssselect("dt, dd")] == ["Scheduling Policy", "none"]
    Cluster.objects.filter(pk=cluster.pk).update(
        scheduling_policy="evenly_distributed", max_free_memory_for_over_utilized=2048
    )
    rows = html_one(admin_client.get(url, headers=HX), "dl.scheduling-props")
    assert [html_text(e) for e in rows.cssselect("dt, dd")] == [
        "Scheduling Policy",
        "evenly_distributed",
        "HighUtilization",
        "80 %",
        "CpuOverCommitDurationMinutes",
        "2 minutes",
        "MaxFreeMemoryForOverUtilized",
        "2,048 MB",
        "MinFreeMemoryForUnderUtilized",
        "not considered",
    ]
    page = admin_client.get(reverse("vms:clusters"))
    link = html_one(page, "a.cluster-name")
    assert link.get("hx-get") == url and html_text(link) == "prod"
    assert (
        admin_client.get(reverse("vms:cluster_details", args=[cluster.pk, "x"])).status_code == 404
    )


def test_the_general_sub_tab_is_not_found_for_a_cluster_out_of_reach(client):
    cluster = ClusterFactory()
    other = ClusterFactory()
    user = UserFactory()
    grant(user, "ClusterAdmin", other)
    client.force_login(user)
    url = reverse("vms:cluster_details", args=[cluster.pk, "general"])
    assert client.get(url, headers=HX).status_code == 404
    mine = reverse("vms:cluster_details", args=[other.pk, "general"])
    assert client.get(mine, headers=HX).status_code == 200
