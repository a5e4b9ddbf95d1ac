"""Networks and network interfaces: the host's libvirt networks that back logical networks,
and hot-plugging, unplugging and updating a domain's interfaces (part of Connection)."""

from __future__ import annotations

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.datatypes import InterfaceSpec, NetworkInfo, NetworkSpec
from hypervisor.domainxml import interface_xml, network_xml
from hypervisor.errors import HypervisorError, NetworkNotFound

# Hot-plug: the running guest (LIVE) and the definition it starts from next time (CONFIG).
_LIVE_AND_CONFIG = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


class NetworksMixin(ConnectionBase):
    """The libvirt networks of the host and the interfaces of its domains."""

    def _network(self, name: str) -> libvirt.virNetwork:
        with self._translated():
            return self._conn.networkLookupByName(name)

    def _network_info(self, net: libvirt.virNetwork) -> NetworkInfo:
        with self._translated():
            return NetworkInfo(
                name=net.name(),
                uuid=net.UUIDString(),
                active=bool(net.isActive()),
                autostart=bool(net.autostart()),
                persistent=bool(net.isPersistent()),
            )

    def list_networks(self) -> list[NetworkInfo]:
        """Every libvirt network of the host, active or not."""
        with self._translated():
            networks = self._conn.listAllNetworks(0)
        result = []
        for net in networks:
            try:
                result.append(self._network_info(net))
            except NetworkNotFound:
                continue  # undefined while we were listing
        return result

    def get_network(self, name: str) -> NetworkInfo:
        """The libvirt network with this name (NetworkNotFound if none)."""
        return self._network_info(self._network(name))

    def ensure_network(self, spec: NetworkSpec, *, restart: bool = False) -> NetworkInfo:
        """Define the network from `spec` (replacing the definition of one so named), start
        it and mark it autostart. An active network keeps running on its old definition
        unless `restart` (stopped and started again: its guests lose their link meanwhile)."""
        try:
            old = self._network(spec.name)
        except NetworkNotFound:
            old = None
        with self._translated():
            uuid = old.UUIDString() if old is not None else None
            if restart and old is not None and old.isActive():
                old.destroy()  # first: libvirt's test driver keeps the old definition otherwise
            net = self._conn.networkDefineXML(network_xml(spec, uuid=uuid))
            if not net.isActive():
                net.create()
            if not net.autostart():
                net.setAutostart(1)
        return self._network_info(net)

    def network_started(self, name: str) -> bool:
        """Whether the network is there and active; start it if it is there but inactive."""
        try:
            net = self._network(name)
        except NetworkNotFound:
            return False
        with self._translated():
            if not net.isActive():
                net.create()
        return True

    def remove_network(self, name: str) -> None:
        """Stop the network and remove its definition (one already gone is fine)."""
        try:
            net = self._network(name)
        except NetworkNotFound:
            return
        with self._translated():
            if net.isActive():
                net.destroy()
            try:
                net.undefine()
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise

    # -- a domain's interfaces ---------------------------------------------------------------

    def _device(self, uuid: str, nic: InterfaceSpec, call: str, *, live: bool) -> None:
        """virDomain{Attach,Detach,Update}DeviceFlags (`call`) with `nic`'s XML."""
        dom = self._domain(uuid)
        flags = _LIVE_AND_CONFIG if live else libvirt.VIR_DOMAIN_AFFECT_CONFIG
        with self._translated():
            getattr(dom, call)(interface_xml(nic), flags)

    def attach_interface(self, uuid: str, nic: InterfaceSpec, *, live: bool) -> None:
        """Plug `nic` into the domain: its definition, and the running guest when `live`."""
        self._device(uuid, nic, "attachDeviceFlags", live=live)

    def detach_interface(self, uuid: str, nic: InterfaceSpec, *, live: bool) -> None:
        """Unplug the interface with `nic`'s MAC from the domain (and the running guest when
        `live`); one the domain does not have is fine."""
        try:
            self._device(uuid, nic, "detachDeviceFlags", live=live)
        except HypervisorError as err:
            if err.code != libvirt.VIR_ERR_DEVICE_MISSING and "not found" not in err.message:
                raise

    def update_interface(self, uuid: str, nic: InterfaceSpec, *, live: bool) -> None:
        """Change the interface with `nic`'s MAC to `nic`: its link state and its network
        (a running guest keeps its device; the model cannot change while it runs)."""
        self._device(uuid, nic, "updateDeviceFlags", live=live)
