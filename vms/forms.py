"""Forms validate what was typed; the services decide whether it may be done."""

from django import forms

from storage.choices import DomainFunction
from storage.models import StorageDomain

from .models import Cluster


class NewVMForm(forms.Form):
    name = forms.CharField(max_length=255)
    description = forms.CharField(max_length=1000, required=False)
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label=None)
    memory_mb = forms.IntegerField(label="Memory Size (MB)", initial=1024)
    vcpus = forms.IntegerField(label="Total Virtual CPUs", initial=1)
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

    def __init__(self, *args, clusters, storage_domains, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = clusters.select_related("data_center")
        self.fields["storage_domain"].queryset = storage_domains.filter(
            domain_function=DomainFunction.DATA
        )


class CloneForm(forms.Form):
    clone_name = forms.CharField(label="Clone Name", max_length=1000, required=False)


class ShutdownForm(forms.Form):
    reason = forms.CharField(label="Reason", max_length=1000, required=False)


class RemoveForm(forms.Form):
    remove_disks = forms.BooleanField(label="Remove Disk(s)", required=False, initial=True)


class ClusterForm(forms.ModelForm):
    class Meta:
        model = Cluster
        fields = ["description", "shutdown_reason_enabled", "shutdown_timeout"]


class HostForm(forms.Form):
    name = forms.CharField(max_length=255)
    uri = forms.CharField(
        label="libvirt URI", max_length=1000, initial="qemu+ssh://root@host.example.com/system"
    )
    cluster = forms.ModelChoiceField(queryset=Cluster.objects.none(), empty_label=None)

    def __init__(self, *args, clusters, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["cluster"].queryset = clusters
