"""Forms parse what was typed and restrict their drop-downs to what the user may choose; the
services decide whether it may be done (who may create from a template, a template's sizing)."""

from django import forms
from django.core.validators import RegexValidator
from django.db.models import Q

from storage.choices import DomainFunction, StorageDomainStatus
from storage.models import StorageDomain

from .choices import ConsoleDisconnectAction, NetworkKind, NicModel, VMStatus
from .models import Cluster, DataCenter, Host, Template, VnicProfile
from .services import MEMORY_MB_RANGE, NAME_MAX, NAME_RE, SHUTDOWN_TIMEOUT_RANGE, VCPUS_RANGE

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

    field_order = ["template", "name", "description", "cluster"]

    def __init__(self, *args, choices: dict, **kwargs):
        super().__init__(*args, **kwargs)
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


class CloneForm(forms.Form):
    clone_name = forms.CharField(
        label="Clone Name",
        max_length=1000,
        required=False,
        widget=forms.TextInput(attrs={"autofocus": True}),
    )


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

    @classmethod
    def initial_of(cls, cluster: Cluster) -> dict:
        return {name: getattr(cluster, name) for name in cls.base_fields}


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
    """Edit Host: its name and cluster (another cluster only in Maintenance)."""

    name = forms.CharField(max_length=NAME_MAX, validators=[host_name_chars])
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label=None)

    def __init__(self, *args, clusters, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = clusters.select_related("data_center")
        self.fields["cluster"].label_from_instance = lambda c: f"{c.name} ({c.data_center.name})"


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
        "System": ("memory_mb", "vcpus", "cores_per_socket"),
        "Host": ("start_host",),
        "Console": ("console_disconnect_action",),
    }

    def __init__(self, *args, vm, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["start_host"].queryset = Host.objects.filter(cluster_id=vm.cluster_id)
        if vm.status != VMStatus.DOWN:
            for name in self.TABS["System"]:
                self.fields[name].disabled = True

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
