"""One resync of an emulated device: pick the source, fetch, decrypt, parse, compare, apply.

This is the device's resync as one synchronous step, with no notion of time; when a
device resyncs (power-on, random delay, periodic, retries, busy lines, upgrades) is
`timeline.TimedDevice`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gitprov.crypto import MAGIC
from gitprov.errors import GitprovError
from gitprov.macros import expand
from gitprov.paramconf import is_param_file
from gitprov.rule_url import RuleSyntaxError, RuleUrl, parse_rule
from gitprov.tools.device.fetch import Fetcher, FetchError, display_url, parse_option66_server
from gitprov.tools.device.paramfile import ParamFileError, parse_param_file, version_number
from gitprov.tools.device.settings import VERSION_KEY, SettingKeys, Settings
from gitprov.tools.device.state import DeviceState, Event

__all__ = ["Compare", "Device", "ResyncResult", "Source", "Status", "rule_error"]

Compare = Literal["!=", ">"]
Source = Literal["option66", "profile-rule"]
Status = Literal[
    "applied",  # the version differed: every parameter stored, device reboots
    "unchanged",  # same version (or, with ">", not a higher one): nothing applied
    "fetch-failed",
    "decrypt-failed",
    "parse-failed",  # not a strict DBID file (also: garbage from a wrong key, 1 in 256)
    "rule-failed",  # nothing to fetch: no usable Profile Rule or option-66 server
    "disabled",  # Provision Enable is off: the device does not resync
]


@dataclass(frozen=True)
class ResyncResult:
    """One resync. `url` is redacted (safe to print); `version_offered` is the fetched
    file's version; `changed` the keys whose stored value changed (only when applied);
    `hint` what to do about a failure, when there is more to say than `detail`.

    `url` and `detail` may hold text from the server (an HTTP reason phrase, a TFTP error
    message, a Profile Rule it served): escape them before they reach a terminal."""

    status: Status
    source: Source | None
    url: str
    version_before: str | None
    version_after: str | None
    version_offered: str | None = None
    changed: tuple[str, ...] = ()
    detail: str = ""
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "unchanged")


class _NoSource(Exception):
    pass


class Device:
    """A device that resyncs as the vendor overview describes.

    `compare` is how `DBID_DBASE_VERSION` decides: "!=" applies any other version (the
    overview, 4.1: "User must change the value of DBID_DBASE_VERSION after every
    modifying, or the product won't resync"), ">" only a higher one; which one the
    firmware uses is not public. `keys` names the DBID key of each setting the device
    reads (`SettingKeys`: the defaults are placeholders where the vendor publishes none).
    """

    def __init__(
        self, state: DeviceState, *, compare: Compare = "!=", keys: SettingKeys | None = None
    ) -> None:
        if compare not in ("!=", ">"):
            raise ValueError(f"compare must be '!=' or '>', not {compare!r}")
        self.state = state
        self.compare: Compare = compare
        self.keys = keys or SettingKeys()

    @property
    def settings(self) -> Settings:
        """The provisioning settings as stored now (defaults where absent)."""
        return Settings.read(self.state.params, self.keys)

    def source(self) -> tuple[Source, RuleUrl]:
        """Where the next resync fetches from, macros expanded. Raises `GitprovError`
        when there is nothing to fetch."""
        try:
            return self._source()
        except _NoSource as exc:
            raise GitprovError(str(exc)) from None

    def _source(self) -> tuple[Source, RuleUrl]:
        """Option 66 or the Profile Rule, never both.

        The overview, 2.1 (Option 66): "If enable, the parameter 'Profile Rule' has no
        effect." And 4.3.3: "Option 66 cannot simultaneously work with Profile Rule. In
        another word, only one of them works at one time. On the other hand, the priority
        of Option 66 is higher than Profile Rule." So with option 66 enabled the device
        asks the option-66 server for its Config File Name, and when DHCP gave no option
        66 it has nothing to fetch: it does not fall back to its Profile Rule.

        A Profile Rule without a server uses the option-66 server over TFTP. Assumed from
        the SPA model the overview copies ("[scheme://][server IP or domain[:port]]/file
        path" shows the server as optional, without saying where the device goes then).
        """
        state = self.state
        settings = self.settings
        option66 = self._option66_server()
        if settings.option66:
            if option66 is None:
                raise _NoSource(
                    "option 66 is enabled (the Profile Rule has no effect) and DHCP gave no "
                    "option-66 server"
                )
            host, port = option66
            url = RuleUrl("tftp", host, port, "/" + state.config_file_name, None, None, None, True)
            return "option66", url
        text = settings.profile_rule
        if not text.strip():
            raise _NoSource("option 66 is disabled and the Profile Rule is empty")
        try:
            rule = parse_rule(text)
        except RuleSyntaxError as exc:
            raise _NoSource(f"the Profile Rule does not parse: {rule_error(text, exc)}") from None
        if not rule.host:
            if option66 is None:
                raise _NoSource("the Profile Rule names no server and DHCP gave no option 66")
            rule = rule._replace(host=option66[0], port=option66[1])
        return "profile-rule", self.expanded(rule)

    def expanded(self, rule: RuleUrl) -> RuleUrl:
        """`rule` with its macros expanded (path and `--key`), as the device requests it.

        The overview, 2.2: "Macro expansion applies with URLs." Expansion itself is
        `gitprov.macros.expand`, the same code the compiler uses for file names.
        """
        variables = self.state.variables()
        return rule._replace(
            path=expand(rule.path, variables),
            key=None if rule.key is None else expand(rule.key, variables),
            explicit_scheme=True,
        )

    def _option66_server(self) -> tuple[str, int] | None:
        if self.state.option66_server is None:
            return None
        try:
            return parse_option66_server(self.state.option66_server)
        except ValueError as exc:
            raise _NoSource(str(exc)) from None

    def resync(self, fetcher: Fetcher) -> ResyncResult:
        """One resync: fetch, decrypt, parse, compare, apply. Failures change nothing.

        Provision Enable off means no resync at all (the overview, 2.1: "Enable or disable
        the Provision functions."). A file is applied when its version differs from the
        stored one (see `compare`): every parameter of it is stored and the device reboots
        (the overview, 4.3.2: it "gets configuration file from TFTP server and reboot
        automatically again to configure new settings"). With `--key` the file is
        decrypted first (4.4: "If you have wrong password, IP542N won't get the
        configuration file").
        """
        state = self.state
        before = state.version
        if not self.settings.provision_enable:
            detail = f"Provision Enable is off ({self.keys.provision_enable}=0)"
            return self._end(ResyncResult("disabled", None, "", before, before, detail=detail))
        try:
            source, url = self._source()
        except _NoSource as exc:
            return self._end(ResyncResult("rule-failed", None, "", before, before, detail=str(exc)))
        shown = display_url(url)
        state.history.append(Event("resync", f"{source} {shown}"))

        def kept(
            status: Status, detail: str, offered: str | None = None, hint: str = ""
        ) -> ResyncResult:
            return self._end(
                ResyncResult(status, source, shown, before, before, offered, (), detail, hint)
            )

        try:
            data = fetcher.fetch(url)
        except FetchError as exc:
            return kept("fetch-failed", exc.message, hint=exc.hint)
        except OSError as exc:
            return kept("fetch-failed", f"{shown}: {exc}")
        if url.key is not None:
            try:
                # (a wrong key that passes the padding check gives garbage: a failed
                # decryption, not a file that does not parse)
                data = state.cipher.decrypt(data, url.key, expect=is_param_file)
            except GitprovError as exc:  # DecryptError, or a key the cipher refuses
                return kept("decrypt-failed", exc.message)
        try:
            params = parse_param_file(data)
        except ParamFileError as exc:
            if url.key is None and data.startswith(MAGIC):
                # (what the device does with it all the same: reads it as text, and fails)
                return kept(
                    "parse-failed",
                    f"{exc.message}: the file is encrypted (it starts with Salted__) and "
                    "the rule gives no [--key KEY]",
                )
            return kept("parse-failed", exc.message)
        offered = params[VERSION_KEY]
        if not self._is_new(before, offered):
            relation = "the same as" if offered == before else "not higher than"
            detail = f"version {offered} is {relation} the stored {before}"
            return kept("unchanged", detail, offered)
        changed = tuple(sorted(k for k, v in params.items() if state.params.get(k) != v))
        state.params.update(params)
        state.history.append(Event("applied", f"version {before} -> {offered}"))
        state.history.append(Event("reboot"))
        return ResyncResult("applied", source, shown, before, offered, offered, changed)

    def _end(self, result: ResyncResult) -> ResyncResult:
        self.state.history.append(Event(result.status, result.detail))
        return result

    def _is_new(self, stored: str | None, offered: str) -> bool:
        current = version_number(stored)
        if current is None:
            return True  # never provisioned (or a stored value that is not a number)
        number = int(offered)
        return number > current if self.compare == ">" else number != current

    def resync_until_stable(self, fetcher: Fetcher, max_rounds: int = 5) -> list[ResyncResult]:
        """Resync until a round is not "applied" (unchanged, or failed), at most
        `max_rounds` times; every round's result.

        Each round after an "applied" one stands for the device's next resync. The vendor
        text says the reboot after an update does not itself trigger Resync On Reset, so on
        a real device that next resync is the periodic one; only the timing differs.
        """
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        results: list[ResyncResult] = []
        for _ in range(max_rounds):
            results.append(self.resync(fetcher))
            if results[-1].status != "applied":
                break
        return results


def rule_error(text: str, exc: RuleSyntaxError) -> str:
    # Some messages quote a word of the option bracket, which may be part of a key.
    if "--key" in text or "--pwd" in text:
        return f"error at character {exc.offset + 1} (message withheld: the rule holds a secret)"
    return f"{exc.message} (character {exc.offset + 1})"
