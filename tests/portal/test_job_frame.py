"""The job frame (issue 8 item 4): `execute` writes a job's Events once, Started, then
Succeeded with the handler's message or Failed with the hypervisor's text after the kind's
on_fail; every job kind is one JobKind with one registered handler."""

import dataclasses

import pytest
from django.db import transaction
from factories import VMFactory

import hypervisor
from portal.kernel import tasks
from portal.kernel.models import Event, Job, JobKind, JobStatus, Phase
from vms import services
from vms.choices import VMStatus

KIND = "frame_probe"


def phases(job) -> list[str]:
    return list(
        Event.objects.filter(job=job).order_by("created_at", "id").values_list("phase", flat=True)
    )


@pytest.fixture
def probe(monkeypatch):
    """A job kind whose handler, on_fail hook and messages the test controls."""
    seen: dict[str, list] = {"fail": [], "failed_events_at_on_fail": []}
    behaviour = {"run": lambda job: "Probe done.", "fail": lambda job, message: None}

    def on_fail(job, message):
        seen["fail"].append(message)
        seen["failed_events_at_on_fail"].append(
            Event.objects.filter(job=job, phase=Phase.FAILED).count()
        )
        behaviour["fail"](job, message)

    monkeypatch.setitem(
        tasks.JOB_TYPES,
        KIND,
        tasks.JobType(
            kind=KIND,
            handler=lambda job: behaviour["run"](job),
            action="probe",
            started=lambda job: f"Started to probe {job.vm.name}.",
            failed=lambda job, vm: f"Failed to probe {vm.name if vm else ''}.",
            on_fail=on_fail,
        ),
    )
    return seen, behaviour


def queued(vm=None) -> Job:
    with transaction.atomic():
        return tasks.job_create(kind=KIND, description="probe", vm=vm)


def test_every_job_kind_has_one_handler_and_every_handler_a_kind():
    assert set(tasks.JOB_TYPES) == set(JobKind.values)
    for kind, job_type in tasks.JOB_TYPES.items():
        assert job_type.kind == kind
        assert job_type.action and callable(job_type.failed)


def test_job_create_refuses_a_kind_without_a_handler(db):
    with pytest.raises(ValueError, match="no handler"):
        tasks.job_create(kind="no_such_kind", description="x")


def test_the_frame_records_started_then_succeeded_once_with_the_handlers_message(db, probe):
    _seen, behaviour = probe
    behaviour["run"] = lambda job: tasks.Outcome(message="Probe done.", reason="because")
    vm = VMFactory()
    job = queued(vm)
    tasks.execute(job.pk)
    job.refresh_from_db()
    assert (job.status, job.progress, job.error) == (JobStatus.SUCCEEDED, 100, "")
    assert phases(job) == [Phase.STARTED, Phase.SUCCEEDED]
    started = Event.objects.get(job=job, phase=Phase.STARTED)
    assert (started.action, started.message, started.vm) == (
        "probe",
        f"Started to probe {vm.name}.",
        vm,
    )
    done = Event.objects.get(job=job, phase=Phase.SUCCEEDED)
    assert (done.message, done.reason, done.vm, done.object_name) == (
        "Probe done.",
        "because",
        vm,
        vm.name,
    )


def test_a_raising_handler_leaves_failed_with_its_text_after_on_fail(db, probe):
    seen, behaviour = probe

    def refuse(job):
        raise hypervisor.HypervisorError("Requested operation is not valid: domain is not running")

    behaviour["run"] = refuse
    vm = VMFactory()
    job = queued(vm)
    tasks.execute(job.pk)
    job.refresh_from_db()
    text = "Requested operation is not valid: domain is not running"
    assert (job.status, job.error) == (JobStatus.FAILED, text)
    assert seen["fail"] == [text]
    assert seen["failed_events_at_on_fail"] == [0]  # on_fail ran first, then the Event
    assert phases(job) == [Phase.STARTED, Phase.FAILED]
    failed = Event.objects.get(job=job, phase=Phase.FAILED)
    assert (failed.message, failed.error, failed.vm, failed.severity) == (
        f"Failed to probe {vm.name}.",
        text,
        vm,
        "error",
    )


def test_last_writes_that_fail_roll_back_the_succeeded_event(db, probe):
    seen, behaviour = probe
    vm = VMFactory(status=VMStatus.POWERING_DOWN)

    def last_writes():
        services.vm_status_move(
            vm_id=vm.pk, from_status=VMStatus.POWERING_DOWN, to_status=VMStatus.DOWN
        )
        raise hypervisor.HypervisorError("the host refused the definition")

    behaviour["run"] = lambda job: tasks.Outcome(message="Probe done.", last_writes=last_writes)
    job = queued(vm)
    tasks.execute(job.pk)
    job.refresh_from_db()
    vm.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "the host refused the definition")
    assert vm.status == VMStatus.POWERING_DOWN  # the end's transaction rolled back
    assert phases(job) == [Phase.STARTED, Phase.FAILED]
    assert seen["fail"] == ["the host refused the definition"]


def test_a_job_the_monitor_fails_gets_one_failed_event_after_on_fail(db, probe):
    seen, _behaviour = probe
    vm = VMFactory()
    job = queued(vm)
    assert tasks.job_fail(job, "The worker carrying out this job stopped before it ended.")
    assert not tasks.job_fail(job, "again")  # a second claimant changes nothing
    assert seen["fail"] == ["The worker carrying out this job stopped before it ended."]
    assert phases(job) == [Phase.FAILED]
    assert Event.objects.get(job=job).message == f"Failed to probe {vm.name}."


def test_a_failed_event_keeps_the_name_of_a_vm_that_on_fail_took_away(db, probe):
    _seen, behaviour = probe
    vm = VMFactory()
    name, cluster, host = vm.name, vm.cluster, vm.host
    behaviour["run"] = lambda job: (_ for _ in ()).throw(RuntimeError("no room"))
    behaviour["fail"] = lambda job, message: type(vm).objects.filter(pk=vm.pk).delete()
    job = queued(vm)
    tasks.execute(job.pk)
    failed = Event.objects.get(job=job, phase=Phase.FAILED)
    assert (failed.vm, failed.object_name, failed.cluster, failed.host, failed.error) == (
        None,
        name,
        cluster,
        host,
        "no room",
    )


def test_a_refused_shutdown_records_each_phase_once(admin, make_vm, work, monkeypatch):
    vm = make_vm(VMStatus.UP)

    def refuse(self, uuid):
        raise hypervisor.HypervisorError("Guest agent is not responding")

    monkeypatch.setattr(type(hypervisor.connect(vm.host.uri)), "shutdown", refuse)
    job = work(lambda: services.vm_shutdown(vm_id=vm.pk, user=admin))
    job.refresh_from_db()
    vm.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILED, "Guest agent is not responding")
    assert vm.status == VMStatus.UP  # on_fail settled it to what the host reports
    assert phases(job) == [Phase.REQUESTED, Phase.STARTED, Phase.FAILED]
    failed = Event.objects.get(job=job, phase=Phase.FAILED)
    assert (failed.action, failed.message, failed.error) == (
        "shutdown",
        f"Failed to shut down VM {vm.name}.",
        "Guest agent is not responding",
    )


def test_a_shutdown_shows_its_first_step_from_the_claim(admin, make_vm, work, monkeypatch):
    """The claim's UPDATE carries the kind's first step: the handler writes no progress."""
    vm = make_vm(VMStatus.UP)
    seen = {}
    real = tasks.JOB_TYPES[JobKind.VM_SHUTDOWN]

    def handler(job):
        seen["row"] = Job.objects.values_list("progress", "step").get(pk=job.pk)
        return real.handler(job)

    monkeypatch.setitem(
        tasks.JOB_TYPES, JobKind.VM_SHUTDOWN, dataclasses.replace(real, handler=handler)
    )
    job = work(lambda: services.vm_shutdown(vm_id=vm.pk, user=admin))
    assert seen["row"] == (10, "Asking the guest to shut down (ACPI)")
    job.refresh_from_db()
    assert (job.status, job.progress) == (JobStatus.SUCCEEDED, 100)
