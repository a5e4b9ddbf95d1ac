"""A cluster's Affinity Groups page, a VM's Affinity Groups sub-tab and the New / Edit /
Remove Affinity Group windows, each tried anonymous, with no permission, permitted and
permitted elsewhere (the permission matrix tries every role at every scope): what they show,
what OK does and what it refuses."""

import pytest
from django.test import Client
from django.urls import reverse
from factories import ClusterFactory, HostFactory, UserFactory, VMFactory, grant
from helpers import HX, assert_messages, html_find, html_one, html_text, parse_html

from vms.affinity import affinity_group_create
from vms.models import AffinityGroup

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(admin):
    cluster = ClusterFactory(name="prod")
    h1 = HostFactory(name="h1", cluster=cluster)
    h2 = HostFactory(name="h2", cluster=cluster)
    a = VMFactory(name="a", host=h1)
    b = VMFactory(name="b", host=h2)
    group = affinity_group_create(
        user=admin, cluster_id=cluster.pk, name="apart", vm_rule="negative", vm_ids=[a.pk, b.pk]
    )
    other = VMFactory(name="theirs", host=HostFactory(name="far", cluster=ClusterFactory()))
    return {"cluster": cluster, "h1": h1, "h2": h2, "a": a, "b": b, "group": group, "other": other}


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_data(world, **changes) -> dict:
    data = {
        "name": "together",
        "description": "web and cache",
        "vm_rule": "positive",
        "vm_enforcing": "on",
        "vms": [world["a"].pk],
        "host_rule": "positive",
        "hosts": [world["h1"].pk],
    }
    return {**data, **changes}


def test_the_cluster_page_four_ways(
    world, admin_client, user_client, django_assert_max_num_queries
):
    url = reverse("vms:affinity_groups", args=[world["cluster"].pk])
    assert Client().get(url).url.startswith("/login/")
    assert user_client.get(url).status_code == 404
    with django_assert_max_num_queries(12):
        page = admin_client.get(url)
    row = html_one(page, f"#affinity-group-{world['group'].pk}")
    assert html_text(row).startswith("apart Negative (Enforcing) a, b Disabled")
    assert [html_text(b) for b in html_find(row, "button")] == ["Edit", "Remove"]
    # a cluster's own VM user sees the page (view) but no button
    viewer = UserFactory()
    grant(viewer, "UserRole", world["cluster"])
    grant(viewer, "HostAdmin", world["h1"])  # an administrative role somewhere
    seen = client_of(viewer).get(url)
    assert seen.status_code == 200 and not html_find(seen, "#affinity-groups button")
    elsewhere = UserFactory()
    grant(elsewhere, "ClusterAdmin", ClusterFactory())
    assert client_of(elsewhere).get(url).status_code == 404
    partial = admin_client.get(url, headers=HX)
    assert html_find(partial, "#affinity-groups") and not html_find(partial, "nav.sub-tabs")
    clusters = admin_client.get(reverse("vms:clusters"))
    assert "Affinity Groups" in [html_text(a) for a in html_find(clusters, "a.button")]


def test_the_vm_sub_tab_lists_its_groups(world, admin_client):
    url = reverse("vms:details", args=[world["a"].pk, "affinity"])
    pane = admin_client.get(url, headers=HX)
    assert "Affinity Groups" in [html_text(t) for t in html_find(pane, "nav.sub-tabs a")]
    (row,) = html_find(pane, "table.affinity-group-list tbody tr")
    assert html_text(row).startswith("apart")
    (new,) = html_find(pane, ".affinity-toolbar button")
    assert new.get("hx-get") == (
        reverse("vms:affinity_group_new", args=[world["cluster"].pk]) + f"?vm={world['a'].pk}"
    )
    lonely = VMFactory(name="lonely", host=world["h1"])
    pane = admin_client.get(reverse("vms:details", args=[lonely.pk, "affinity"]), headers=HX)
    assert "No affinity groups." in html_text(html_one(pane, "table.affinity-group-list"))


def test_the_cluster_details_pane_has_an_affinity_groups_sub_tab(world, admin_client, user_client):
    url = reverse("vms:cluster_details", args=[world["cluster"].pk, "affinity"])
    pane = admin_client.get(url, headers=HX)
    tabs = [html_text(t) for t in html_find(pane, "#cluster-details nav.sub-tabs a")]
    assert tabs == ["General", "Affinity Groups"]
    row = html_one(pane, f"#affinity-group-{world['group'].pk}")
    assert html_text(row).startswith("apart Negative (Enforcing) a, b Disabled")
    assert html_find(pane, ".affinity-toolbar button")  # New
    assert user_client.get(url, headers=HX).status_code == 404


def test_new_from_a_vm_selects_it_and_ok_creates(world, admin_client):
    url = reverse("vms:affinity_group_new", args=[world["cluster"].pk])
    window = admin_client.get(url + f"?vm={world['b'].pk}", headers=HX)
    selected = html_find(window, "select[name=vms] option[selected]")
    assert [o.text for o in selected] == ["b"]
    assert [o.text for o in html_find(window, "select[name=hosts] option")] == ["h1", "h2"]
    done = admin_client.post(url, post_data(world), headers=HX)
    assert_messages(done, "success", "Affinity group together created in cluster prod.")
    made = AffinityGroup.objects.get(name="together")
    assert (made.vm_rule, made.vm_enforcing, made.host_rule, made.host_enforcing) == (
        "positive",
        True,
        "positive",
        False,
    )
    assert list(made.vms.all()) == [world["a"]] and list(made.hosts.all()) == [world["h1"]]


def test_the_window_refuses_and_changes_nothing(world, admin_client):
    url = reverse("vms:affinity_group_new", args=[world["cluster"].pk])

    def refused(data) -> str:
        window = admin_client.post(url, data, headers=HX)
        assert window.status_code == 200
        return html_text(parse_html(window))

    assert (
        "Cannot save affinity group together: an affinity group holds VMs of its own "
        "cluster prod only, not theirs" in refused(post_data(world, vms=[world["other"].pk]))
    )
    assert "conflicts with affinity group apart (Negative), which also holds VMs a and b" in (
        refused(post_data(world, vms=[world["a"].pk, world["b"].pk], host_rule="disabled"))
    )
    assert "already used by another affinity group" in refused(post_data(world, name="APART"))
    assert "Ensure this value has at most 50 characters" in refused(post_data(world, name="x" * 51))
    assert "A virtual machine you selected does not exist." in refused(
        post_data(world, vms=[999999])
    )
    assert "Select a valid choice" in refused(post_data(world, vms=["x"]))
    assert AffinityGroup.objects.count() == 1


def test_a_vm_out_of_reach_is_not_named(world):
    """A ClusterAdmin of prod posting a VM of a cluster it cannot see learns nothing of it."""
    admin = UserFactory()
    grant(admin, "ClusterAdmin", world["cluster"])
    url = reverse("vms:affinity_group_new", args=[world["cluster"].pk])
    window = client_of(admin).post(url, post_data(world, vms=[world["other"].pk]), headers=HX)
    text = html_text(parse_html(window))
    assert "A virtual machine you selected does not exist." in text and "theirs" not in text
    assert AffinityGroup.objects.count() == 1


def test_edit_and_remove_four_ways(world, admin_client, user_client):
    group = world["group"]
    edit = reverse("vms:affinity_group_edit", args=[group.pk])
    remove = reverse("vms:affinity_group_remove", args=[group.pk])
    for url in (edit, remove):
        assert Client().get(url).url.startswith("/login/")
        assert user_client.get(url).status_code == 404
    window = admin_client.get(edit, headers=HX)
    assert html_one(window, "input[name=name]").get("value") == "apart"
    assert [o.text for o in html_find(window, "select[name=vms] option[selected]")] == ["a", "b"]
    # ClusterAdmin elsewhere: the group is out of reach; UserRole on the cluster: no action
    elsewhere = UserFactory()
    grant(elsewhere, "ClusterAdmin", ClusterFactory())
    assert client_of(elsewhere).post(edit, post_data(world)).status_code == 404
    assert client_of(elsewhere).post(remove).status_code == 404
    viewer = UserFactory()
    grant(viewer, "UserRole", world["cluster"])
    grant(viewer, "HostAdmin", world["h1"])
    assert client_of(viewer).get(edit).status_code == 404
    done = admin_client.post(edit, post_data(world, name="apart2", vm_rule="negative"), headers=HX)
    assert_messages(done, "success", "Affinity group apart2 saved.")
    group.refresh_from_db()
    assert (group.name, group.vm_rule, list(group.vms.all())) == (
        "apart2",
        "negative",
        [world["a"]],
    )
    owner = UserFactory()
    grant(owner, "ClusterAdmin", world["cluster"])
    done = client_of(owner).post(remove, headers=HX)
    assert_messages(done, "success", "Affinity group apart2 removed.")
    assert not AffinityGroup.objects.exists()
    assert client_of(owner).get(remove).status_code == 404
