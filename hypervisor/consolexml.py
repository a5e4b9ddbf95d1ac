"""The XML of a domain's console: its graphics devices (VNC always, SPICE where the host's qemu
has it), its video device, and the graphics passwords (tickets) set on a running domain.

Next to domainxml.py (which calls graphics_elements for every domain it builds); everything is
ElementTree, no value is formatted into XML text.
"""

from __future__ import annotations

import secrets
import string
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

# A password set at define time and already expired: nobody reaches a graphics port until a
# ticket sets a password of its own (what oVirt does with its tickets).
EXPIRED = "1970-01-01T00:00:01"
# VNC authentication uses 8 characters of a password (DES); SPICE takes more, but one ticket
# password serves both.
PASSWORD_LENGTH = 8
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class GraphicsInfo:
    """A graphics device of a running domain: `type` vnc or spice, the port it listens on (-1:
    none yet, as libvirt's test driver reports), the address it listens on, and until when the
    password set on it is valid ("" when none)."""

    type: str
    port: int
    listen: str
    tls_port: int = -1
    password_valid_to: str = ""


def random_password() -> str:
    """A fresh graphics password: 8 random letters and digits (about 47 bits)."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def graphics_elements(listen: str, *, spice: bool, qxl: bool) -> list[ET.Element]:
    """The <graphics> devices (VNC, and SPICE when `spice`) listening on `listen`, each with an
    expired random password, and the <video> device (qxl when offered, else vga)."""
    elements = []
    for kind in ("vnc", "spice") if spice else ("vnc",):
        graphics = ET.Element(
            "graphics",
            {
                "type": kind,
                "port": "-1",
                "autoport": "yes",
                "listen": listen,
                "passwd": random_password(),
                "passwdValidTo": EXPIRED,
            },
        )
        ET.SubElement(graphics, "listen", {"type": "address", "address": listen})
        elements.append(graphics)
    video = ET.Element("video")
    ET.SubElement(video, "model", {"type": "qxl" if qxl else "vga"})
    elements.append(video)
    return elements


def _graphics(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("type", ""): g for g in root.findall("devices/graphics")}


def _int(value: str | None, default: int = -1) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def domain_graphics(xml: str) -> list[GraphicsInfo]:
    """The graphics devices of a domain's (live) XML, in XML order."""
    found = []
    for kind, element in _graphics(ET.fromstring(xml)).items():
        listen = element.get("listen", "")
        listen_el = element.find("listen")
        if listen_el is not None and listen_el.get("address"):
            listen = listen_el.get("address")
        found.append(
            GraphicsInfo(
                type=kind,
                port=_int(element.get("port")),
                listen=listen,
                tls_port=_int(element.get("tlsPort")),
                password_valid_to=element.get("passwdValidTo", ""),
            )
        )
    return found


def graphics_with_password(xml: str, kind: str, password: str, valid_to: datetime) -> str:
    """The <graphics type=`kind`> element of a domain's XML with `password`, valid until
    `valid_to` (UTC), as the device XML that virDomainUpdateDeviceFlags takes. KeyError when
    the domain has no such device."""
    element = _graphics(ET.fromstring(xml))[kind]
    element.set("passwd", password)
    element.set("passwdValidTo", valid_to.strftime("%Y-%m-%dT%H:%M:%S"))
    element.set("connected", "keep")  # a ticket never disconnects a client already in
    return ET.tostring(element, encoding="unicode")


def with_graphics_device(xml: str, device: str) -> str:
    """A domain's XML with its <graphics> of the same type replaced by `device` (the test
    driver's stand-in for virDomainUpdateDeviceFlags)."""
    root = ET.fromstring(xml)
    new = ET.fromstring(device)
    devices = root.find("devices")
    old = _graphics(root)[new.get("type", "")]
    index = list(devices).index(old)
    devices.remove(old)
    new.attrib.pop("connected", None)
    devices.insert(index, new)
    return ET.tostring(root, encoding="unicode")


def capabilities_graphics(domcaps: str) -> tuple[set[str], set[str]]:
    """The graphics types and video models a host's domain capabilities offer."""
    root = ET.fromstring(domcaps)
    graphics = {v.text for v in root.findall("devices/graphics/enum[@name='type']/value")}
    video = {v.text for v in root.findall("devices/video/enum[@name='modelType']/value")}
    return {g for g in graphics if g}, {v for v in video if v}
