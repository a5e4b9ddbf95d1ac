"""Forms parse what was typed and restrict their drop-downs to what the user may choose; the
services decide whether it may be done (who may create from a template, a template's sizing)."""

from django import forms
from django.core.validators import RegexValidator
from django.db.models import Q

from storage.choices import DomainFunction, StorageDomainStatus
from storage.images import image_label
from storage.models import StorageDomain

from .choices import (
    AffinityRule,
    BootDevice,
    BootSequence,
    ConsoleDisconnectAction,
    FenceAgent,
    MigrationMode,
    NetworkKind,
    NicModel,
    SchedulingPolicy,
    VMPriority,
    VMStatus,
    boot_sequence_devices,
)
from .migration_policy import BANDWIDTH_RANGE, DOWNTIME_RANGE
from .models import AffinityGroup, Cluster, DataCenter, Host, Template, VnicProfile
from .scheduling_policy import PROPERTIES as SCHEDULING_PROPERTIES
from .scheduling_policy import SCHEDULING_FIELDS
from .services import (
    MEMORY_MB_RANGE,
    MIGRATIONS_AT_ONCE_RANGE,
    NAME_MAX,
    NAME_RE,
    SHUTDOWN_TIMEOUT_RANGE,
    VCPUS_RANGE,
)

# Every field checks what it can on its own, so a window shows all its field errors at once;
# the services check the same again (and what needs the database) when OK is pressed.
name_chars = RegexValidator(NAME_RE, "Name may contain only letters, digits, '-', '_' and '.'.")
host_name_chars = RegexValidator(
    NAME_RE, "Host name is required: letters, digits, '-', '_' and '.', at most 255 characters."
)


def ranged_field(label: str, bounds, what: str, unit: str = "", **kwargs) -> forms.IntegerField:
    """A whole number in `bounds`, refused in the services' own words."""
    low, high = bounds
    message = f"{what} must be between {low:,} and {high:,}{unit}."
    return forms.IntegerField(
        label=label,
        min_value=low,
        max_value=high,
        error_messages={"min_value": message, "max_value": message},
        **kwargs,
    )


def memory_field(**kwargs) -> forms.IntegerField:
    return ranged_field("Memory Size (MB)", MEMORY_MB_RANGE, "Memory", " MB", **kwargs)


def vcpus_field(**kwargs) -> forms.IntegerField:
    return ranged_field("Total Virtual CPUs", VCPUS_RANGE, "vCPUs", **kwargs)


class NewVMForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, validators=[name_chars])
    description = forms.CharField(max_length=1000, required=False)
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label=None)
    memory_mb = memory_field(initial=1024)
    vcpus = vcpus_field(initial=1)
    disk_size_gb = forms.IntegerField(
        label="Disk Size (GiB)", initial=10, min_value=1, max_value=65536
    )
    storage_domain = forms.ModelChoiceField(
        label="Storage Domain", queryset=StorageDomain.objects.none(), empty_label=None
    )
    allocation = forms.ChoiceField(
        label="Allocation Policy",
        choices=[("thin", "Thin Provision"), ("preallocated", "Preallocated")],
        initial="thin",
    )

    template = forms.ModelChoiceField(
        queryset=Template.objects.none(), required=False, empty_label="Blank"
    )
    profile = forms.ModelChoiceField(
        label="vNIC Profile (nic1)",
        queryset=VnicProfile.objects.none(),
        required=False,
        empty_label="(no network interface)",
    )

    # Boot Options
    first_device = forms.ChoiceField(
        label="First Device", choices=BootDevice.choices, required=False, initial="hd"
    )
    second_device = forms.ChoiceField(
        label="Second Device", choices=[("", "[None]"), *BootDevice.choices], required=False
    )
    cd_image = forms.TypedChoiceField(
        label="Attach CD", coerce=int, empty_value=None, required=False, choices=[("", "[None]")]
    )

    field_order = ["template", "name", "description", "cluster"]

    def __init__(self, *args, choices: dict, images=(), **kwargs):
        super().__init__(*args, **kwargs)
        images = list(images)
        several = len({i.domain.data_center_id for i in images}) > 1
        self.fields["cd_image"].choices = [
            ("", "[None]"),
            *(
                (str(i.pk), image_label(i) + (f" ({i.domain.data_center.name})" if several else ""))
                for i in images
            ),
        ]
        self.fields["cluster"].queryset = choices["clusters"].select_related("data_center")
        self.fields["template"].queryset = choices["templates"]
        # Only Data domains take a VM's disks (ISO and Export are other functions), and only
        # Active ones can.
        data_domains = StorageDomain.objects.filter(
            domain_function=DomainFunction.DATA, status=StorageDomainStatus.ACTIVE
        )
        if choices["template_clusters"].exists():
            # A VM from a template brings its disk: any data domain of the template's data center.
            dcs = choices["template_clusters"].values("data_center_id")
            data_domains = data_domains.filter(
                Q(pk__in=choices["disk_domains"].values("pk")) | Q(data_center_id__in=dcs)
            )
        else:
            data_domains = data_domains.filter(pk__in=choices["disk_domains"].values("pk"))
        self.fields["storage_domain"].queryset = data_domains
        self.fields["profile"].queryset = choices["profiles"]
        self.fields["profile"].label_from_instance = profile_label

    BOOT_OPTIONS = ("first_device", "second_device", "cd_image")

    def main_fields(self):
        return [f for f in self if f.name not in self.BOOT_OPTIONS]

    def boot_fields(self):
        return [self[name] for name in self.BOOT_OPTIONS]

    def clean(self):
        """`boot_sequence` from First and Second Device (Hard Disk when none is posted)."""
        data = super().clean()
        first, second = data.get("first_device") or "hd", data.get("second_device")
        if second == first:
            self.add_error("second_device", "Second Device must differ from First Device.")
        else:
            data["boot_sequence"] = ",".join(d for d in (first, second) if d)
        return data


class CloneForm(forms.Form):
    clone_name = forms.CharField(
        label="Clone Name",
        max_length=1000,
        required=False,
        widget=forms.TextInput(attrs={"autofocus": True}),
    )


class MigrateForm(forms.Form):
    """The Migrate Virtual Machine(s) window: Select Host Automatically, or Select Destination
    Host from the hosts that can take every selected VM."""

    AUTO, CHOSEN = "auto", "host"
    mode = forms.ChoiceField(
        label="Destination",
        choices=[(AUTO, "Select Host Automatically"), (CHOSEN, "Select Destination Host")],
        initial=AUTO,
        widget=forms.RadioSelect,
    )
    host = forms.TypedChoiceField(label="Destination Host", coerce=int, required=False)

    def __init__(self, *args, hosts, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["host"].choices = [("", "—")] + [(h.pk, h.name) for h in hosts]

    def clean(self):
        data = super().clean()
        if data.get("mode") == self.CHOSEN and not data.get("host"):
            self.add_error("host", "Choose the destination host.")
        return data

    def host_id(self) -> int | None:
        return self.cleaned_data["host"] if self.cleaned_data["mode"] == self.CHOSEN else None


class ImportForm(forms.Form):
    name = forms.CharField(label="Name", max_length=1000, required=False)


class VMActionForm(forms.Form):
    """What the shared confirmation window may ask (`vms.actions.Action.inputs`)."""

    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "Why is this VM being shut down?"}),
    )
    remove_disks = forms.BooleanField(label="Remove Disk(s)", required=False, initial=True)


def _model_field(model, name: str):
    return model._meta.get_field(name)


class DataCenterForm(forms.Form):
    """New Data Center and Edit Data Center."""

    name = forms.CharField(max_length=NAME_MAX)
    description = forms.CharField(max_length=1000, required=False)


class ClusterForm(forms.Form):
    """Edit Cluster: its name, description and VM settings."""

    name = forms.CharField(max_length=NAME_MAX)
    description = forms.CharField(max_length=1000, required=False)
    shutdown_reason_enabled = forms.BooleanField(
        label=_model_field(Cluster, "shutdown_reason_enabled").verbose_name,
        help_text=_model_field(Cluster, "shutdown_reason_enabled").help_text,
        required=False,
    )
    shutdown_timeout = ranged_field(
        _model_field(Cluster, "shutdown_timeout").verbose_name.capitalize(),
        SHUTDOWN_TIMEOUT_RANGE,
        "Graceful shutdown timeout",
        " seconds",
        help_text=_model_field(Cluster, "shutdown_timeout").help_text,
        initial=120,
    )
    max_concurrent_migrations = ranged_field(
        _model_field(Cluster, "max_concurrent_migrations").verbose_name,
        MIGRATIONS_AT_ONCE_RANGE,
        "Maximum concurrent outgoing migrations",
        required=False,
        help_text=_model_field(Cluster, "max_concurrent_migrations").help_text,
    )

    @classmethod
    def initial_of(cls, cluster: Cluster) -> dict:
        return {name: getattr(cluster, name) for name in cls.base_fields}


def _inherit_choices(model_field: str, inherit: str) -> list[tuple[str, str]]:
    return [("", inherit), *Cluster._meta.get_field(model_field).choices]


def migration_policy_fields(inherit: str) -> dict[str, forms.Field]:
    """The inheritable migration settings (vms/migration_policy.py), each with `inherit`
    ("Inherit from global setting" / "... cluster setting") as its empty choice."""
    return {
        "migration_policy": forms.ChoiceField(
            label="Migration Policy",
            choices=_inherit_choices("migration_policy", inherit),
            required=False,
            help_text="Legacy: the maximum downtime at once; Minimal downtime: raised step by "
            "step; Post-copy: then post-copy; Suspend workload if needed: then a pause.",
        ),
        "auto_converge": forms.TypedChoiceField(
            label="Auto Converge migrations",
            choices=[("", inherit), ("true", "Auto Converge"), ("false", "Don't Auto Converge")],
            coerce=lambda v: v == "true",
            empty_value=None,
            required=False,
        ),
        "migration_compression": forms.ChoiceField(
            label="Enable migration compression",
            choices=_inherit_choices("migration_compression", inherit),
            required=False,
            help_text="Used where the source host's libvirt supports it.",
        ),
        "migration_bandwidth": forms.ChoiceField(
            label="Migration bandwidth",
            choices=_inherit_choices("migration_bandwidth", inherit),
            required=False,
        ),
        "migration_bandwidth_mbps": ranged_field(
            "Custom migration bandwidth (Mbps)",
            BANDWIDTH_RANGE,
            "Custom migration bandwidth",
            " Mbps",
            required=False,
            help_text="With Migration bandwidth Custom.",
        ),
    }


MIGRATION_POLICY_FIELDS = tuple(migration_policy_fields(""))


def _scheduling_field(name: str, **kwargs) -> forms.IntegerField:
    field = _model_field(Cluster, name)
    oname, bounds, unit, _required = SCHEDULING_PROPERTIES[name]
    return ranged_field(
        f"{oname}{' (' + unit.strip() + ')' if unit.strip() != 'minutes' else ''}",
        bounds,
        oname,
        unit.replace("%", "%%"),  # Django %-formats a range error's message
        required=False,  # absent: unchanged; the service refuses a required one left empty
        help_text=field.help_text,
        **kwargs,
    )


def scheduling_policy_fields() -> dict[str, forms.Field]:
    """The Scheduling Policy tab: the policy and its properties (vms/scheduling_policy.py)."""
    return {
        "scheduling_policy": forms.ChoiceField(
            label="Scheduling Policy",
            choices=SchedulingPolicy.choices,
            required=False,
            help_text="none: no load balancing; evenly_distributed: VMs leave over-utilized "
            "hosts; power_saving: VMs are packed onto fewer hosts and under-utilized hosts "
            "emptied.",
        ),
        **{name: _scheduling_field(name) for name in SCHEDULING_PROPERTIES},
    }


class EditClusterForm(ClusterForm):
    """Edit Cluster: General (ClusterForm's fields), the Migration Policy tab and the
    Scheduling Policy tab."""

    locals().update(migration_policy_fields("Inherit from global setting"))
    locals().update(scheduling_policy_fields())

    TABS = {
        "General": (),
        "Migration Policy": MIGRATION_POLICY_FIELDS,
        "Scheduling Policy": SCHEDULING_FIELDS,
    }

    def tabs(self):
        """(tab name, its bound fields): General holds every field no other tab names."""
        named = {n for names in self.TABS.values() for n in names}
        general = [self[n] for n in self.fields if n not in named]
        return [("General", general)] + [
            (tab, [self[n] for n in names]) for tab, names in self.TABS.items() if names
        ]


class NewClusterForm(ClusterForm):
    """New Cluster: Edit Cluster's fields in a data center the user may create clusters in."""

    data_center = forms.ModelChoiceField(
        label="Data Center", queryset=DataCenter.objects.none(), empty_label=None
    )

    field_order = ["data_center", "name", "description"]

    def __init__(self, *args, data_centers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["data_center"].queryset = data_centers


class HostForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, validators=[host_name_chars])
    uri = forms.CharField(
        label="Address", max_length=1000, initial="qemu+ssh://root@host.example.com/system"
    )
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label=None)

    def __init__(self, *args, clusters, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = clusters


class EditHostForm(forms.Form):
    """Edit Host: its name and cluster (another cluster only in Maintenance), and its Power
    Management tab (the fence agent; checked strictly by vms.fencing when enabled)."""

    name = forms.CharField(max_length=NAME_MAX, validators=[host_name_chars])
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label=None)
    # Power Management
    pm_enabled = forms.BooleanField(label="Enable Power Management", required=False)
    pm_agent = forms.ChoiceField(
        label="Type", choices=FenceAgent.choices, initial=FenceAgent.IPMILAN, required=False
    )
    pm_address = forms.CharField(label="Address", max_length=255, required=False)
    pm_user = forms.CharField(label="User Name", max_length=64, required=False)
    pm_password = forms.CharField(
        label="Password",
        max_length=255,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Empty: the password stored is kept.",
    )
    pm_options = forms.CharField(
        label="Options",
        max_length=255,
        required=False,
        help_text="Comma-separated, e.g. lanplus=1, ipport=623, privlvl=operator.",
    )

    TABS = {
        "General": ("name", "cluster"),
        "Power Management": (
            "pm_enabled",
            "pm_agent",
            "pm_address",
            "pm_user",
            "pm_password",
            "pm_options",
        ),
    }

    def __init__(self, *args, clusters, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = clusters.select_related("data_center")
        self.fields["cluster"].label_from_instance = lambda c: f"{c.name} ({c.data_center.name})"

    def tabs(self):
        return [(tab, [self[name] for name in names]) for tab, names in self.TABS.items()]

    def power_management(self) -> dict | None:
        """The Power Management tab as `host_update` takes it (None: not posted)."""
        if "pm_agent" not in self.data:
            return None
        data = self.cleaned_data
        return {
            "enabled": data["pm_enabled"],
            "agent": data["pm_agent"],
            "address": data["pm_address"],
            "user": data["pm_user"],
            "password": data["pm_password"],
            "options": data["pm_options"],
        }


def cd_image_field(label: str = "Attach CD") -> forms.TypedChoiceField:
    """A drop-down of ISO images (choices set by the window: `image_choices`); the id, or None."""
    return forms.TypedChoiceField(
        label=label, coerce=int, empty_value=None, required=False, choices=[("", "[None]")]
    )


def image_choices(images, *, empty: str, current=None) -> list[tuple[str, str]]:
    """The choices of an image drop-down: `empty` (no CD) first, then the images offered (the
    guest tools ISO first, marked), and the VM's current image if it is not among them."""
    choices = [("", empty), *((str(i.pk), image_label(i)) for i in images)]
    if current is not None and str(current.pk) not in {value for value, _ in choices}:
        choices.append((str(current.pk), f"{current.name} (attached)"))
    return choices


FULL_BOOT_SEQUENCES = [(v, label) for v, label in BootSequence.choices if v.count(",") == 2]


def full_boot_sequence(value: str) -> str:
    """A stored boot sequence with the devices it leaves out added after it, in their order."""
    devices = list(boot_sequence_devices(value))
    devices += [d for d in BootDevice.values if d not in devices]
    return ",".join(devices)


class RunOnceForm(forms.Form):
    """The Run Virtual Machine(s) window of Run Once: Boot Options (Attach CD, Boot Sequence)."""

    cd_image = cd_image_field()
    boot_sequence = forms.ChoiceField(label="Boot Sequence", choices=FULL_BOOT_SEQUENCES)

    def __init__(self, *args, vm, images=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cd_image"].choices = image_choices(images, empty="[None]", current=vm.cd_image)
        self.initial.setdefault("cd_image", vm.cd_image_id)
        self.initial.setdefault("boot_sequence", full_boot_sequence(vm.boot_sequence))


class ChangeCDForm(forms.Form):
    """The Change CD window: an image of the data center's ISO domains, or [Eject]."""

    cd_image = cd_image_field("CD")

    def __init__(self, *args, vm, images=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cd_image"].choices = image_choices(images, empty="[Eject]")
        first = next(iter(images), None)  # the guest tools ISO when there is one
        self.initial.setdefault("cd_image", first.pk if first is not None else None)


class EditVMForm(forms.Form):
    """The Edit Virtual Machine window: General, System and Host tabs. What the VM's status
    does not let change is shown read-only (disabled: the posted value is ignored)."""

    # General
    description = forms.CharField(max_length=1000, required=False)
    sso_enabled = forms.BooleanField(
        label="Single Sign-On: use the guest agent to log the user in", required=False
    )
    # System
    memory_mb = memory_field()
    vcpus = vcpus_field()
    cores_per_socket = ranged_field(
        "Cores per Virtual Socket",
        VCPUS_RANGE,
        "Cores per Virtual Socket",
        initial=1,
        required=False,  # not posted: unchanged
    )
    # Host
    start_host = forms.ModelChoiceField(
        label="Start Running On",
        queryset=Host.objects.none(),
        required=False,
        empty_label="Any Host in Cluster",
    )

    migration_mode = forms.ChoiceField(
        label="Migration mode",
        choices=MigrationMode.choices,
        required=False,  # not posted: unchanged
    )
    locals().update(migration_policy_fields("Inherit from cluster setting"))
    custom_migration_downtime = ranged_field(
        "Use custom migration downtime (ms)",
        DOWNTIME_RANGE,
        "Migration downtime",
        " ms",
        required=False,
        help_text="Empty: the maximum downtime of engine-config (DefaultMaximumMigrationDowntime).",
    )
    cpu_passthrough = forms.BooleanField(
        label="Pass-Through Host CPU",
        required=False,
        help_text="The guest sees the host's CPU as it is; such a VM cannot migrate "
        '(Migration mode "Do not allow migration").',
    )
    # High Availability
    highly_available = forms.BooleanField(
        label="Highly Available",
        required=False,
        help_text="Vireo restarts the VM when it stops without anyone asking: a crash, its "
        "QEMU process killed, a guest panic, its host fenced or confirmed rebooted. A shutdown "
        "from Vireo or from inside the guest is not undone.",
    )
    priority = forms.TypedChoiceField(
        label="Priority for Run/Migration queue",
        choices=VMPriority.choices,
        coerce=int,
        empty_value=None,
        required=False,  # not posted: unchanged
        help_text="A host moved to Maintenance migrates higher-priority VMs first; Highly "
        "Available VMs waiting for a restart start in this order too.",
    )

    # Boot Options
    first_device = forms.ChoiceField(
        label="First Device", choices=BootDevice.choices, required=False
    )
    second_device = forms.ChoiceField(
        label="Second Device", choices=[("", "[None]"), *BootDevice.choices], required=False
    )
    cd_image = cd_image_field()
    # Console
    console_disconnect_action = forms.ChoiceField(
        label="Console Disconnect Action",
        choices=ConsoleDisconnectAction.choices,
        required=False,  # not posted: unchanged
        help_text="When the last user closes the console. Lock screen presses Super+L in the "
        "guest, which locks Windows and GNOME desktops.",
    )

    TABS = {
        "General": ("description", "sso_enabled"),
        "System": ("memory_mb", "vcpus", "cores_per_socket", "cpu_passthrough"),
        "Host": (
            "start_host",
            "migration_mode",
            *MIGRATION_POLICY_FIELDS,
            "custom_migration_downtime",
        ),
        "High Availability": ("highly_available", "priority"),
        "Boot Options": ("first_device", "second_device", "cd_image"),
        "Console": ("console_disconnect_action",),
    }

    def __init__(self, *args, vm, images=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["start_host"].queryset = Host.objects.filter(cluster_id=vm.cluster_id)
        if vm.status != VMStatus.DOWN:
            for name in self.TABS["System"]:
                self.fields[name].disabled = True
        devices = boot_sequence_devices(vm.boot_sequence)
        self.initial.setdefault("first_device", devices[0])
        self.initial.setdefault("second_device", devices[1] if len(devices) > 1 else "")
        self.initial.setdefault("cd_image", vm.cd_image_id)
        self.fields["cd_image"].choices = image_choices(images, empty="[None]", current=vm.cd_image)

    def clean(self):
        """`boot_sequence` from First and Second Device; Boot Options not posted (a client
        that knows no such tab) are left out of the cleaned data: unchanged."""
        data = super().clean()
        first, second = data.get("first_device"), data.get("second_device")
        if first and second == first:
            self.add_error("second_device", "Second Device must differ from First Device.")
        elif first:
            data["boot_sequence"] = ",".join(d for d in (first, second) if d)
        if "cd_image" not in self.data:
            data.pop("cd_image", None)
        return data

    def tabs(self):
        """(tab name, its bound fields), in the window's order."""
        return [(tab, [self[name] for name in names]) for tab, names in self.TABS.items()]


def profile_label(profile: VnicProfile) -> str:
    """A vNIC profile in a drop-down: "profile/network (data center)"."""
    network = profile.network
    return f"{profile.name}/{network.name} ({network.data_center.name})"


class NetworkForm(forms.Form):
    """New / Edit Logical Network."""

    name = forms.CharField(max_length=NAME_MAX, validators=[name_chars])
    description = forms.CharField(max_length=1000, required=False)
    vm_network = forms.BooleanField(label="VM network", required=False, initial=True)
    kind = forms.ChoiceField(label="Type", choices=NetworkKind.choices, initial=NetworkKind.NAT)
    ipv4 = forms.CharField(
        label="IPv4 address (NAT, isolated)",
        max_length=18,
        required=False,
        help_text="The hosts' address with its prefix, e.g. 192.168.150.1/24; DHCP serves the rest.",
    )
    bridge = forms.CharField(label="Host bridge", max_length=15, required=False)
    vlan = forms.IntegerField(
        label="VLAN tag",
        required=False,
        min_value=0,
        max_value=4094,
        error_messages={
            "min_value": "VLAN tag must be between 0 and 4094.",
            "max_value": "VLAN tag must be between 0 and 4094.",
        },
    )


class VnicProfileForm(forms.Form):
    """New / Edit VM Interface Profile."""

    name = forms.CharField(max_length=NAME_MAX, validators=[name_chars])
    description = forms.CharField(max_length=1000, required=False)
    port_mirroring = forms.BooleanField(label="Port Mirroring", required=False)


class NicForm(forms.Form):
    """New / Edit Network Interface."""

    name = forms.CharField(
        max_length=64, required=False, help_text="Empty: the next free of nic1, nic2 ..."
    )
    profile = forms.ModelChoiceField(
        label="Profile", queryset=VnicProfile.objects.none(), empty_label=None
    )
    model = forms.ChoiceField(label="Type", choices=NicModel.choices, initial=NicModel.VIRTIO)
    mac = forms.CharField(
        label="MAC address",
        max_length=40,
        required=False,
        help_text="Empty: the next free address of the data center's MAC pool.",
    )
    link_state = forms.ChoiceField(
        label="Link State",
        choices=[("up", "Up"), ("down", "Down")],
        initial="up",
        widget=forms.RadioSelect,
    )
    card_status = forms.ChoiceField(
        label="Card Status",
        choices=[("plugged", "Plugged"), ("unplugged", "Unplugged")],
        initial="plugged",
        widget=forms.RadioSelect,
    )

    def __init__(self, *args, profiles, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["profile"].queryset = profiles
        self.fields["profile"].label_from_instance = profile_label


class AffinityGroupForm(forms.Form):
    """New / Edit Affinity Group: name, description, the VM Affinity Rule and the VM to host
    rule (each Enforcing or not), the VMs and the hosts. The lists offer the cluster's VMs and
    hosts; ids posted outside what the user may see are refused here, and the service refuses
    those of another cluster by name."""

    name = forms.CharField(max_length=AffinityGroup.NAME_MAX, validators=[name_chars])
    description = forms.CharField(max_length=1000, required=False)
    vm_rule = forms.ChoiceField(
        label="VM Affinity Rule",
        choices=AffinityRule.choices,
        initial=AffinityRule.POSITIVE,
        help_text="Positive: its VMs run on one host. Negative: on different hosts.",
    )
    vm_enforcing = forms.BooleanField(
        label="Enforcing (VM Affinity Rule)",
        required=False,
        initial=True,
        help_text="Enforcing: a host that breaks the rule is never chosen (hard); "
        "otherwise it is only avoided (soft).",
    )
    host_rule = forms.ChoiceField(
        label="VM to host rule",
        choices=AffinityRule.choices,
        initial=AffinityRule.DISABLED,
        help_text="Positive: its VMs run on the hosts below. Negative: never on them.",
    )
    host_enforcing = forms.BooleanField(
        label="Enforcing (VM to host rule)", required=False, initial=False
    )
    vms = forms.TypedMultipleChoiceField(
        label="Virtual Machines", coerce=int, required=False, widget=forms.SelectMultiple
    )
    hosts = forms.TypedMultipleChoiceField(
        label="Hosts", coerce=int, required=False, widget=forms.SelectMultiple
    )

    def __init__(self, *args, vms, hosts, visible_vms, visible_hosts, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["vms"].choices = [(v.pk, v.name) for v in vms]
        self.fields["hosts"].choices = [(h.pk, h.name) for h in hosts]
        self.fields["vms"].widget.attrs["size"] = min(10, max(4, len(vms)))
        self.fields["hosts"].widget.attrs["size"] = min(6, max(3, len(hosts)))
        # what may be posted: anything the user may see (of another cluster: the service's)
        self.fields["vms"].valid_value = lambda value: True
        self.fields["hosts"].valid_value = lambda value: True
        self._visible = {"vms": visible_vms, "hosts": visible_hosts}

    def _reachable(self, name: str, what: str) -> list[int]:
        ids = list(dict.fromkeys(self.cleaned_data.get(name) or []))
        if any(not 0 < pk < 2**63 for pk in ids):
            raise forms.ValidationError(f"Select valid {what}.")
        if self._visible[name].filter(pk__in=ids).count() != len(ids):
            raise forms.ValidationError(f"A {what[:-1]} you selected does not exist.")
        return ids

    def clean_vms(self) -> list[int]:
        return self._reachable("vms", "virtual machines")

    def clean_hosts(self) -> list[int]:
        return self._reachable("hosts", "hosts")


class PinToHostForm(forms.Form):
    """The Pin VM to Host window: a host of the VM's cluster."""

    host = forms.ModelChoiceField(queryset=Host.objects.none(), label="Host", empty_label=None)

    def __init__(self, *args, hosts, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["host"].queryset = hosts.order_by("name")
