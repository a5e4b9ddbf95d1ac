"""vms.services: the status table decides, the conditional update settles races, nothing is
changed when a request is refused, and every accepted request is recorded as "requested"."""

import threading

import pytest
from django.db import connection
from factories import (
    HostFactory,
    UserFactory,
    VMFactory,
)
from vm_services_support import call_action, snapshot, vm_for

from portal.kernel.errors import ActionRefused
from portal.kernel.models import Event, Job, JobStatus, Phase
from vms import services
from vms.actions import VM_STATUS_ACTIONS, VMAction, allowed_actions
from vms.choices import VMStatus
from vms.models import VirtualMachine

# -- the status table ------------------------------------------------------------------------

ALL_CASES = [(action, status) for action in VM_STATUS_ACTIONS for status in VMStatus.values]


def external(action: str) -> bool:
    """Whether the status table of `action` is the one of external VMs (Import's)."""
    return bool(VM_STATUS_ACTIONS[action].external)


@pytest.mark.parametrize(
    ("action", "status"),
    [
        c
        for c in ALL_CASES
        # Change CD holds no busy status (tests/vms/test_cdrom.py); Migrate needs a second host
        # and Cancel Migration a migration under way (tests/vms/test_migration.py).
        if c[0] in allowed_actions(c[1], external=external(c[0]))
        and c[0] not in (VMAction.CHANGE_CD, VMAction.MIGRATE, VMAction.CANCEL_MIGRATION)
    ],
)
def test_legal_transition_moves_to_busy_status_and_creates_the_job(admin, action, status):
    vm = vm_for(action, status=status)
    result = call_action(action, vm, admin)
    vm.refresh_from_db()
    assert vm.status == VM_STATUS_ACTIONS[action].busy_for(status)
    (job,) = Job.objects.all()
    assert job.vm_id == vm.pk
    assert job.status == JobStatus.QUEUED
    assert job.kind == f"vm_{action}"
    assert job.user == admin
    assert job.params["from_status"] == status
    (event,) = Event.objects.all()
    assert (event.phase, event.action, event.vm_id, event.job_id, event.user_id) == (
        Phase.REQUESTED,
        action,
        vm.pk,
        job.pk,
        admin.pk,
    )
    assert event.message.startswith(f"{admin.username} asked to ")
    assert vm.name in event.message
    if action == VMAction.CLONE:
        assert result.status == VMStatus.IMAGE_LOCKED
        assert job.result_vm_id == result.pk
    else:
        assert result == job


@pytest.mark.parametrize(
    ("action", "status"),
    [c for c in ALL_CASES if c[0] not in allowed_actions(c[1], external=external(c[0]))],
)
def test_illegal_transition_is_refused_and_changes_nothing(admin, action, status):
    vm = vm_for(action, status=status)
    before = snapshot(vm)
    label = VMStatus(status).label
    with pytest.raises(ActionRefused, match=rf"Cannot .+ {vm.name}: the VM is {label}\.$"):
        call_action(action, vm, admin)
    assert snapshot(vm) == before


def test_table_examples_in_the_chapters_words(admin):
    down = VMFactory(status=VMStatus.DOWN)
    with pytest.raises(ActionRefused) as exc:
        services.vm_suspend(vm_id=down.pk, user=admin)
    assert str(exc.value) == f"Cannot suspend {down.name}: the VM is Down."
    up = VMFactory(status=VMStatus.UP)
    with pytest.raises(ActionRefused, match="Cannot remove .*: the VM is Up"):
        services.vm_remove(vm_id=up.pk, user=admin)
    with pytest.raises(ActionRefused, match="Cannot clone .*: the VM is Up"):
        services.vm_clone(vm_id=up.pk, user=admin, clone_name="fine-name")
    assert not VirtualMachine.objects.filter(name="fine-name").exists()
    assert not Job.objects.exists()


def test_run_from_suspended_shows_restoring_state(admin):
    vm = VMFactory(status=VMStatus.SUSPENDED)
    services.vm_run(vm_id=vm.pk, user=admin)
    vm.refresh_from_db()
    assert vm.status == VMStatus.RESTORING_STATE


def test_unknown_action_and_missing_vm_are_refused(admin):
    vm = VMFactory(status=VMStatus.UP)
    with pytest.raises(ActionRefused, match="Unknown action 'remove'"):
        services.vm_action(vm_id=vm.pk, action="remove", user=admin)
    with pytest.raises(ActionRefused, match="does not exist any more"):
        services.vm_shutdown(vm_id=vm.pk + 1000, user=admin)
    assert not Job.objects.exists()
    vm.refresh_from_db()
    assert vm.status == VMStatus.UP


# -- races ---------------------------------------------------------------------------------


def test_second_shutdown_is_refused_with_the_current_status(admin):
    vm = VMFactory(status=VMStatus.UP)
    other = UserFactory(is_superuser=True)
    services.vm_shutdown(vm_id=vm.pk, user=admin)
    with pytest.raises(ActionRefused) as exc:
        services.vm_shutdown(vm_id=vm.pk, user=other)
    assert "Powering Down" in str(exc.value)
    assert Job.objects.count() == 1
    assert Event.objects.filter(phase=Phase.REQUESTED).count() == 1
    vm.refresh_from_db()
    assert vm.status == VMStatus.POWERING_DOWN


def test_lost_race_on_the_conditional_update(admin, monkeypatch):
    """The second admin read the VM while it was still Up: the table check passes but the
    conditional update finds it moved, so the request is refused and nothing is recorded."""
    vm = VMFactory(status=VMStatus.UP)
    stale = services.vm_load(vm.pk)
    services.vm_shutdown(vm_id=vm.pk, user=admin)
    monkeypatch.setattr(services, "vm_load", lambda vm_id: stale)
    with pytest.raises(ActionRefused) as exc:
        services.vm_poweroff(vm_id=vm.pk, user=admin)
    assert str(exc.value) == (
        f"Cannot power off {vm.name}: it was changed by another request and is now "
        "Powering Down. Nothing was done."
    )
    assert Job.objects.count() == 1
    assert Event.objects.count() == 1
    vm.refresh_from_db()
    assert vm.status == VMStatus.POWERING_DOWN


def test_lost_race_against_removal(admin, monkeypatch):
    vm = VMFactory(status=VMStatus.UP)
    stale = services.vm_load(vm.pk)
    VirtualMachine.objects.filter(pk=vm.pk).delete()
    monkeypatch.setattr(services, "vm_load", lambda vm_id: stale)
    with pytest.raises(ActionRefused, match="is now removed. Nothing was done."):
        services.vm_shutdown(vm_id=vm.pk, user=admin)
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_admins_racing_in_parallel_only_one_wins(monkeypatch):
    """Two requests in their own transactions both read the VM as Up; PostgreSQL's row lock
    makes the second conditional update see Powering Down, so it is refused."""
    admins = [UserFactory(is_superuser=True), UserFactory(is_superuser=True)]
    vm = VMFactory(status=VMStatus.UP)
    both_loaded = threading.Barrier(2, timeout=10)
    real_load = services.vm_load

    def load_then_wait(vm_id):
        loaded = real_load(vm_id)
        both_loaded.wait()
        return loaded

    monkeypatch.setattr(services, "vm_load", load_then_wait)
    outcomes: list[object] = []

    def request(user):
        try:
            outcomes.append(services.vm_shutdown(vm_id=vm.pk, user=user))
        except ActionRefused as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(u,)) for u in admins]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    refused = [o for o in outcomes if isinstance(o, ActionRefused)]
    won = [o for o in outcomes if isinstance(o, Job)]
    assert len(won) == 1 and len(refused) == 1, outcomes
    assert "changed by another request and is now Powering Down" in str(refused[0])
    assert Job.objects.count() == 1
    assert Event.objects.filter(phase=Phase.REQUESTED).count() == 1
    vm.refresh_from_db()
    assert vm.status == VMStatus.POWERING_DOWN


@pytest.mark.django_db(transaction=True)
def test_two_clones_racing_for_one_name_only_one_gets_it(monkeypatch):
    """Two admins clone two VMs of one data center to the same name at the same moment: the
    data center's row lock serialises the name check, so the second sees the first's clone."""
    admin = UserFactory(is_superuser=True)
    first = VMFactory(status=VMStatus.DOWN)
    second = VMFactory(status=VMStatus.DOWN, host=HostFactory(cluster=first.cluster))
    both_loaded = threading.Barrier(2, timeout=10)
    real_load = services.vm_load

    def load_then_wait(vm_id):
        loaded = real_load(vm_id)
        both_loaded.wait()
        return loaded

    monkeypatch.setattr(services, "vm_load", load_then_wait)
    outcomes: list[object] = []

    def request(vm):
        try:
            outcomes.append(services.vm_clone(vm_id=vm.pk, user=admin, clone_name="twin"))
        except ActionRefused as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(vm,)) for vm in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    refused = [o for o in outcomes if isinstance(o, ActionRefused)]
    assert len(refused) == 1 and len(outcomes) == 2, outcomes
    assert "'twin' is already used" in str(refused[0])
    assert VirtualMachine.objects.filter(name="twin").count() == 1
    assert Job.objects.count() == 1
