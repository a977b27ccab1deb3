"""`gitprov probe`: one emulated device's resync against a live server."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gitprov.crypto import Cipher, Mode
from gitprov.errors import UsageError
from gitprov.rule_url import RuleSyntaxError, format_rule, parse_rule
from gitprov.tools.device.fetch import MultiFetcher, parse_option66_server
from gitprov.tools.device.resync import Device, ResyncResult, rule_error
from gitprov.tools.device.settings import SettingKeys
from gitprov.tools.device.state import DeviceState, load_state, save_state

__all__ = ["ProbeOptions", "probe"]


@dataclass(frozen=True)
class ProbeOptions:
    mac: str  # normalised
    url: str | None = None  # the Profile Rule
    key: str | None = None  # becomes the rule's [--key …]
    mode: str | None = None
    iterations: int | None = None
    gzip: bool | None = None
    option66: str | None = None  # HOST[:PORT]
    config_file_name: str | None = None
    product_name: str = "IP542N"
    serial: str = ""
    sw_version: str = ""
    hw_version: str = ""
    state: Path | None = None  # read if it exists, written back after
    until_stable: bool = False
    max_rounds: int = 5
    compare: Literal["!=", ">"] = "!="
    timeout: float = 5.0
    resolve: tuple[str, ...] = ()  # NAME=ADDR:PORT
    cacert: str | None = None
    cert: str | None = None
    cert_key: str | None = None
    setting_keys: tuple[str, ...] = ()  # NAME=DBID_KEY: which key holds which setting


def probe(o: ProbeOptions) -> list[ResyncResult]:
    """One emulated device's resync (or resyncs, until stable) against a live server.

    `--url` without `--option66` also disables option 66 on the device, as the overview
    tells operators to (4.1 ⑥: "fill the URL in the file rule, like
    http://www.flyingvoice.com/fv$(MAU).conf and disable option 66 because the default
    value is ‘enable’"): with it enabled the Profile Rule has no effect. With both,
    option 66 wins, as on the device.
    """
    if o.max_rounds < 1:
        raise UsageError("--max-rounds must be at least 1")
    try:
        keys = SettingKeys.parse(o.setting_keys)
    except ValueError as exc:
        raise UsageError(f"--setting-key {exc}") from None
    if o.key is not None and o.url is None:
        raise UsageError("--key needs --url")
    if o.state is not None:
        _refuse_unwritable_state(o.state)
    # (the TLS files are the command line's: refused before the state is read)
    ssl_context = _probe_tls(o.cacert, o.cert, o.cert_key)
    if o.state is not None and o.state.exists():
        state = load_state(o.state)
        if state.mac != o.mac:
            raise UsageError(f"{o.state} is the state of {state.mac}, not {o.mac}")
    else:
        state = DeviceState(
            o.mac,
            product_name=o.product_name,
            serial=o.serial,
            sw_version=o.sw_version,
            hw_version=o.hw_version,
        )
    if o.url is not None:
        state.params[keys.profile_rule] = _probe_rule(o.url, o.key)
    if o.option66 is not None:
        try:
            parse_option66_server(o.option66)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        state.option66_server = o.option66
    if o.config_file_name:
        state.config_file_name = o.config_file_name
    if o.mode is not None or o.iterations is not None or o.gzip is not None:
        state.cipher = Cipher(
            Mode(o.mode) if o.mode is not None else state.cipher.mode,
            o.iterations if o.iterations is not None else state.cipher.iterations,
            o.gzip if o.gzip is not None else state.cipher.gzip,
        )
    if o.url is not None and state.option66_server is None:
        state.params[keys.option66] = "0"
    if not state.params.get(keys.profile_rule) and state.option66_server is None:
        raise UsageError("nothing to fetch", hint="give --url RULE, or --option66 HOST[:PORT]")
    fetcher = MultiFetcher.standard(
        timeout=o.timeout,
        ssl_context=ssl_context,
        host_override=_probe_resolve(o.resolve),
    )
    device = Device(state, compare=o.compare, keys=keys)
    if o.until_stable:
        results = device.resync_until_stable(fetcher, o.max_rounds)
    else:
        results = [device.resync(fetcher)]
    if o.state is not None:
        try:
            save_state(o.state, state)
        except OSError as exc:  # checked up front, so only if it changed since
            raise UsageError(
                f"cannot write the device state {o.state}: {exc.strerror or exc}",
                hint="the resync was done but not saved; make its directory writable "
                "and run it again",
            ) from None
    return results


def _refuse_unwritable_state(path: Path) -> None:
    """A `--state` file that could not be written, refused before the resync: written
    after it, the failure would come once the fetch is done and its outcome lost."""
    if path.is_dir():
        raise UsageError(
            f"--state {path} is a directory; the device state is a file",
            hint=f"name a file, e.g. --state {path / 'device.json'}",
        )
    directory = path.parent
    if not directory.exists():
        raise UsageError(
            f"--state {path}: its directory {directory} does not exist",
            hint=f"create it first (mkdir -p {directory}), or name a file in an existing directory",
        )
    if not directory.is_dir():
        raise UsageError(
            f"--state {path}: {directory} is not a directory",
            hint="name a file in a directory",
        )
    # The file is written as a new one beside it, then renamed over it: the directory
    # is what must be writable, not the file.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(
            f"--state {path}: cannot write in its directory {directory}",
            hint="make the directory writable, or name a file in one that is",
        )


def _probe_rule(url: str, key: str | None) -> str:
    try:
        rule = parse_rule(url)
    except RuleSyntaxError as exc:
        raise UsageError(f"--url: {rule_error(url, exc)}") from None
    if key is None:
        return url
    if rule.key is not None:
        raise UsageError("the key is given twice: in --url's [--key …] and as --key")
    if not key or "\0" in key:
        raise UsageError("--key must be a non-empty passphrase")
    try:
        return format_rule(rule._replace(key=key))
    except ValueError:
        raise UsageError("--key holds both quote characters; a rule cannot carry it") from None


def _probe_resolve(entries: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    override: dict[str, tuple[str, int]] = {}
    for entry in entries:
        name, sep, target = entry.partition("=")
        try:
            if not sep or not name or ":" not in target:
                raise ValueError(entry)
            override[name] = parse_option66_server(target)
        except ValueError:
            raise UsageError(
                f"--resolve {entry!r}: write NAME=ADDR:PORT, e.g. prov.example.net=127.0.0.1:8080"
            ) from None
    return override


def _probe_tls(cacert: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    if key is not None and cert is None:
        raise UsageError("--cert-key needs --cert")
    try:
        context = ssl.create_default_context(cafile=cacert)
        if cert is not None:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        # (every one of them a path of the command line: a usage error, as serve's are)
        raise UsageError(
            f"cannot load TLS files: {exc}",
            hint="--cacert, --cert and --cert-key take PEM files; the key must match --cert",
        ) from None
    return context
