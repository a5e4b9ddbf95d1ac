"""Jobs (long work carried out by RQ workers) and Events (the audit log of every action)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from .querysets import RestrictedManager


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class JobKind(models.TextChoices):
    """Every kind of job; each has one handler (`portal.kernel.tasks.job_handler`)."""

    VM_CREATE = "vm_create", "Create VM"
    VM_RUN = "vm_run", "Run VM"
    VM_SHUTDOWN = "vm_shutdown", "Shut down VM"
    VM_POWER_OFF = "vm_poweroff", "Power off VM"
    VM_SUSPEND = "vm_suspend", "Suspend VM"
    VM_REBOOT = "vm_reboot", "Reboot VM"
    VM_REMOVE = "vm_remove", "Remove VM"
    VM_CLONE = "vm_clone", "Clone VM"
    VM_IMPORT = "vm_import", "Import VM"
    VM_MIGRATE = "vm_migrate", "Migrate VM"
    VM_RUN_ONCE = "vm_run_once", "Run VM once"
    VM_CHANGE_CD = "vm_change_cd", "Change CD"
    SNAPSHOT_CREATE = "snapshot_create", "Create snapshot"
    SNAPSHOT_PREVIEW = "snapshot_preview", "Preview snapshot"
    SNAPSHOT_UNDO = "snapshot_undo", "Undo snapshot preview"
    SNAPSHOT_COMMIT = "snapshot_commit", "Commit snapshot preview"
    SNAPSHOT_DELETE = "snapshot_delete", "Delete snapshot"
    DISK_ATTACH = "disk_attach", "Attach disk"
    DISK_REMOVE = "disk_remove", "Remove disk"
    STORAGE_DOMAIN_CREATE = "storage_domain_create", "Add storage domain"
    STORAGE_DOMAIN_ACTIVATE = "storage_domain_activate", "Activate storage domain"
    STORAGE_DOMAIN_MAINTENANCE = "storage_domain_maintenance", "Storage domain maintenance"
    STORAGE_DOMAIN_DETACH = "storage_domain_detach", "Detach storage domain"
    STORAGE_DOMAIN_ATTACH = "storage_domain_attach", "Attach storage domain"
    STORAGE_DOMAIN_REMOVE = "storage_domain_remove", "Remove storage domain"
    ISO_UPLOAD = "iso_upload", "Upload ISO image"
    ISO_REMOVE = "iso_remove", "Remove ISO image"
    NETWORK_CREATE = "network_create", "Create logical network"
    NETWORK_EDIT = "network_edit", "Edit logical network"
    NETWORK_REMOVE = "network_remove", "Remove logical network"
    NIC_CREATE = "nic_create", "Add network interface"
    NIC_EDIT = "nic_edit", "Edit network interface"
    NIC_REMOVE = "nic_remove", "Remove network interface"


class Job(models.Model):
    """One piece of long work on the hypervisors, carried out by an RQ worker from its id."""

    # One of JobKind (checked where a job is made and a handler registered); not a database
    # choice, so that a new kind of job needs no migration.
    kind = models.CharField(max_length=64)
    description = models.CharField(max_length=500)
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    step = models.CharField(max_length=500, blank=True)
    vm = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs"
    )
    result_vm = models.ForeignKey(
        "vms.VirtualMachine",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="result_jobs",
        help_text="A VM the job makes (the clone of a Clone VM job).",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    params = models.JSONField(default=dict, blank=True)
    rq_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Asked to stop (Cancel Migration): a job that can stop midway reads it and ends.
    cancel_requested = models.BooleanField(default=False)

    ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)

    objects = RestrictedManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.description} ({self.get_status_display()})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class Severity(models.TextChoices):
    NORMAL = "normal", "Normal"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class Phase(models.TextChoices):
    REQUESTED = "requested", "requested"
    STARTED = "started", "started"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    DETECTED = "detected", "detected"


class Event(models.Model):
    """One line of the audit log: who asked for what on which object, and how it ended."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.NORMAL)
    phase = models.CharField(max_length=16, choices=Phase.choices)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32)
    object_name = models.CharField(max_length=255)
    vm = models.ForeignKey(
        "vms.VirtualMachine",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="events",
    )
    host = models.ForeignKey(
        "vms.Host", on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    cluster = models.ForeignKey(
        "vms.Cluster", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    job = models.ForeignKey(
        Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    message = models.CharField(max_length=1000)
    reason = models.CharField(max_length=1000, blank=True)
    error = models.TextField(blank=True)

    objects = RestrictedManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["vm", "-created_at"])]

    def __str__(self) -> str:
        return self.message


class ConfigValue(models.Model):
    """An engine-config value an administrator set (`portal.kernel.config`); a key without a
    row has its declared default."""

    key = models.CharField(max_length=100, unique=True)
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}"
