"""What one emulated device holds (`DeviceState`), and its state file for `gitprov probe`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from gitprov.crypto import Cipher, Mode
from gitprov.errors import UsageError
from gitprov.macros import device_variables, normalise_mac
from gitprov.tools.device.settings import VERSION_KEY, factory_params

__all__ = ["DeviceState", "Event", "load_state", "save_state"]


@dataclass(frozen=True)
class Event:
    """One entry of a device's history: `kind` is "resync", a `Status`, or "reboot"."""

    kind: str
    detail: str = ""


@dataclass(repr=False)
class DeviceState:
    """What one device holds. `params` are its stored DBID values (per-line values
    TAB-joined, as in the file); they hold secrets, hence no generated repr.

    `config_file_name` defaults to `<product_name>.conf`; `option66_server` is what DHCP
    option 66 gave (`host` or `host:port`), None when DHCP gave none; `cipher` is the
    model's decryption setting (the vendor's algorithm is not public).
    """

    mac: str
    product_name: str = "IP542N"
    serial: str = ""
    sw_version: str = ""
    hw_version: str = ""
    ip: str = ""
    params: dict[str, str] = field(default_factory=factory_params)
    config_file_name: str = ""
    option66_server: str | None = None
    cipher: Cipher = field(default_factory=Cipher)
    history: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        mac = normalise_mac(self.mac)
        if mac is None:
            raise ValueError(f"not a MAC address: {self.mac!r}")
        self.mac = mac
        if not self.config_file_name:
            self.config_file_name = f"{self.product_name}.conf"

    def __repr__(self) -> str:
        return (
            f"DeviceState(mac={self.mac!r}, product_name={self.product_name!r}, "
            f"version={self.version!r}, params=<{len(self.params)} values>, "
            f"option66_server={self.option66_server!r})"
        )

    @property
    def version(self) -> str | None:
        return self.params.get(VERSION_KEY)

    def variables(self) -> dict[str, str]:
        """The macro variables: MA, MAU, MAC, and PN, SN, IP, SWVER, HWVER when set."""
        return device_variables(
            self.mac,
            product_name=self.product_name,
            serial=self.serial,
            ip=self.ip,
            swver=self.sw_version,
            hwver=self.hw_version,
        )


# --- state files -------------------------------------------------------------------------

_STATE_FORMAT = 1


def save_state(path: Path, state: DeviceState) -> None:
    """Write `state` as JSON, atomically and readable by the owner only: the stored
    parameters hold the device's secrets (SIP passwords, the key in the Profile Rule)."""
    document = {
        "format": _STATE_FORMAT,
        "mac": state.mac,
        "product_name": state.product_name,
        "serial": state.serial,
        "sw_version": state.sw_version,
        "hw_version": state.hw_version,
        "ip": state.ip,
        "config_file_name": state.config_file_name,
        "option66_server": state.option66_server,
        "cipher": {
            "mode": state.cipher.mode.value,
            "iterations": state.cipher.iterations,
            "gzip": state.cipher.gzip,
        },
        "params": state.params,
        "history": [{"kind": e.kind, "detail": e.detail} for e in state.history],
    }
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(path: Path) -> DeviceState:
    """Read what `save_state` wrote; a malformed file is a `UsageError` (a file argument
    that cannot be read, exit 2)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UsageError(
            f"cannot read device state {path}: {exc}",
            hint="delete it to start from a factory-default device",
        ) from None
    try:
        if document.get("format") != _STATE_FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        cipher = document["cipher"]
        params = document["params"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
            raise ValueError("params must map names to strings")
        option66 = document["option66_server"]
        return DeviceState(
            mac=str(document["mac"]),
            product_name=str(document["product_name"]),
            serial=str(document["serial"]),
            sw_version=str(document["sw_version"]),
            hw_version=str(document["hw_version"]),
            ip=str(document["ip"]),
            params=dict(params),
            config_file_name=str(document["config_file_name"]),
            option66_server=None if option66 is None else str(option66),
            cipher=Cipher(Mode(cipher["mode"]), int(cipher["iterations"]), bool(cipher["gzip"])),
            history=[Event(str(e["kind"]), str(e["detail"])) for e in document["history"]],
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"{path} is not a device state file: {exc}",
            hint="delete it to start from a factory-default device",
        ) from None
