"""Consoles: what graphics a host offers, a running domain's graphics ports, console tickets
(a graphics password with an expiry) and keys sent to the guest (part of Connection)."""

from __future__ import annotations

from datetime import datetime

import libvirt

from hypervisor.base import ConnectionBase
from hypervisor.consolexml import (
    GraphicsInfo,
    capabilities_graphics,
    domain_graphics,
    graphics_with_password,
)
from hypervisor.errors import HypervisorError


class ConsoleMixin(ConnectionBase):
    """The graphics of the host's domains."""

    _graphics_offered: tuple[set[str], set[str]] | None = None

    def graphics_offered(self) -> tuple[set[str], set[str]]:
        """The graphics types (vnc, spice ...) and video models (vga, qxl ...) the host's qemu
        offers (its domain capabilities; read once per connection)."""
        if self._graphics_offered is None:
            with self._translated():
                domcaps = self._conn.getDomainCapabilities(None, None, None, None, 0)
            self._graphics_offered = capabilities_graphics(domcaps)
        return self._graphics_offered

    def _graphics_xml(self, dom: libvirt.virDomain) -> str:
        """The XML the graphics are read from and updated in: the running domain's."""
        with self._translated():
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)

    def _update_graphics(self, dom: libvirt.virDomain, device: str) -> None:
        with self._translated():
            dom.updateDeviceFlags(device, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def domain_graphics(self, uuid: str) -> list[GraphicsInfo]:
        """The graphics devices of the running domain: type, port, listen address."""
        return domain_graphics(self._graphics_xml(self._domain(uuid)))

    def set_graphics_password(
        self, uuid: str, kind: str, password: str, valid_to: datetime
    ) -> None:
        """Set a console ticket on the running domain's `kind` (vnc, spice) graphics: the
        password a client must give, valid until `valid_to` (UTC). Clients already connected
        stay connected."""
        dom = self._domain(uuid)
        try:
            device = graphics_with_password(self._graphics_xml(dom), kind, password, valid_to)
        except KeyError:
            raise HypervisorError(
                f"the virtual machine has no {kind.upper()} graphics device",
                libvirt.VIR_ERR_DEVICE_MISSING,
            ) from None
        self._update_graphics(dom, device)

    def send_keys(self, uuid: str, keycodes: list[int]) -> None:
        """Press `keycodes` (Linux input key codes) together on the running domain's keyboard,
        then release them (virDomainSendKey)."""
        dom = self._domain(uuid)
        with self._translated():
            dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 100, keycodes, len(keycodes), 0)
