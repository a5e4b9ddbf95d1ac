"""The catalogue of actions (vms/actions.py) is complete: every action has a service, a job
handler when it runs as a job, a role action of the role catalogue, and a place in the
permission matrix, and every job handler belongs to an action."""

import pytest
from django.urls import get_resolver
from django.utils.module_loading import import_string
from permission_matrix_rules import RULES
from permission_matrix_world import build_world

from accounts.catalogue import ACTIONS
from portal.kernel.tasks import JOB_TYPES
from portal.models import JobKind
from vms.actions import CATALOGUE, TOOLBAR, USER_PORTAL_ACTIONS, VM_STATUS_ACTIONS

IDS = [entry.id for entry in CATALOGUE]


def test_each_action_is_declared_once():
    assert len(IDS) == len(set(IDS))


@pytest.mark.parametrize("entry", CATALOGUE, ids=IDS)
def test_each_action_has_a_service_and_a_role_action(entry):
    service = import_string(entry.service)
    assert callable(service) and service.__doc__, f"{entry.id}: {entry.service} is no service"
    for permission in (entry.permission, *entry.also):
        assert permission in ACTIONS, f"{entry.id}: {permission} is not in accounts.catalogue"
    assert entry.label and entry.verb and entry.title, f"{entry.id}: words missing"


@pytest.mark.parametrize(
    "entry", [e for e in CATALOGUE if e.job], ids=[e.id for e in CATALOGUE if e.job]
)
def test_each_job_action_has_a_job_handler(entry):
    assert entry.job in JobKind.values, f"{entry.id}: {entry.job} is not a JobKind"
    assert entry.job in JOB_TYPES, f"{entry.id}: no job handler for kind {entry.job}"


def test_each_job_handler_belongs_to_an_action():
    assert set(JOB_TYPES) == {entry.job for entry in CATALOGUE if entry.job}


def test_the_status_table_actions_say_where_they_start_and_what_they_hold():
    for entry in VM_STATUS_ACTIONS.values():
        assert entry.sources, entry.id
        # Each holds a busy status, but what is done at once and Change CD (the guest runs on).
        assert entry.busy or not entry.job or entry.key == "change_cd", entry.id
        assert set(entry.busy_from) <= entry.sources, entry.id
    # The shared confirmation window (several VMs at once) asks the entry's question.
    assert all(entry.question for entry in TOOLBAR if entry.confirm and entry.multi)
    assert [a.user_portal for a in USER_PORTAL_ACTIONS] == list(
        range(1, len(USER_PORTAL_ACTIONS) + 1)
    )


def _takes_the_action(url_name: str) -> bool:
    """Whether the URL names the action itself (`<str:action>`), as vms:action does."""
    namespace, _, name = url_name.rpartition(":")
    resolver = get_resolver()
    if namespace:
        resolver = resolver.namespace_dict[namespace][1]
    return any("<str:action>" in str(p.pattern) for p in resolver.url_patterns if p.name == name)


@pytest.mark.django_db
def test_each_action_has_a_place_in_the_permission_matrix():
    world = build_world()
    for entry in CATALOGUE:
        assert entry.url in RULES, f"{entry.id}: {entry.url} has no rule in the permission matrix"
        cases = RULES[entry.url].cases(world)
        if _takes_the_action(entry.url):
            cases = [c for c in cases if f"/{entry.key}/" in c.url]
        gated = [c for c in cases if entry.permission in c.need.actions]
        assert gated, (
            f"{entry.id}: the matrix never tries {entry.url} as needing {entry.permission}"
        )
