"""Forms parse what was typed and restrict their drop-downs to what the user may choose; the
services decide whether it may be done (who may create from a template, a template's sizing)."""

from django import forms
from django.core.validators import RegexValidator
from django.db.models import Q

from storage.choices import DomainFunction
from storage.models import StorageDomain

from .models import Cluster, Template
from .services import MEMORY_MB_RANGE, NAME_MAX, NAME_RE, VCPUS_RANGE

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

    field_order = ["template", "name", "description", "cluster"]

    def __init__(self, *args, choices: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = choices["clusters"].select_related("data_center")
        self.fields["template"].queryset = choices["templates"]
        data_domains = StorageDomain.objects.filter(domain_function=DomainFunction.DATA)
        if choices["template_clusters"].exists():
            # A VM from a template brings its disk: any data domain of the template's data center.
            dcs = choices["template_clusters"].values("data_center_id")
            data_domains = data_domains.filter(
                Q(pk__in=choices["disk_domains"].values("pk")) | Q(data_center_id__in=dcs)
            )
        else:
            data_domains = data_domains.filter(pk__in=choices["disk_domains"].values("pk"))
        self.fields["storage_domain"].queryset = data_domains


class CloneForm(forms.Form):
    clone_name = forms.CharField(
        label="Clone Name",
        max_length=1000,
        required=False,
        widget=forms.TextInput(attrs={"autofocus": True}),
    )


class VMActionForm(forms.Form):
    """What the shared confirmation window may ask (`vms.actions.Action.inputs`)."""

    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "Why is this VM being shut down?"}),
    )
    remove_disks = forms.BooleanField(label="Remove Disk(s)", required=False, initial=True)


class ClusterForm(forms.ModelForm):
    shutdown_timeout = ranged_field(
        Cluster._meta.get_field("shutdown_timeout").verbose_name.capitalize(),
        (5, 3600),
        "Graceful shutdown timeout",
        " seconds",
        help_text=Cluster._meta.get_field("shutdown_timeout").help_text,
    )

    class Meta:
        model = Cluster
        fields = ["description", "shutdown_reason_enabled", "shutdown_timeout"]


class HostForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, validators=[host_name_chars])
    uri = forms.CharField(
        label="Address", max_length=1000, initial="qemu+ssh://root@host.example.com/system"
    )
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label=None)

    def __init__(self, *args, clusters, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = clusters


class EditVMForm(forms.Form):
    description = forms.CharField(max_length=1000, required=False)
    memory_mb = memory_field()
    vcpus = vcpus_field()
    sso_enabled = forms.BooleanField(
        label="Single Sign-On: use the guest agent to log the user in", required=False
    )
