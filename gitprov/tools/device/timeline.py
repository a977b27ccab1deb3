"""When an emulated device resyncs and upgrades: its timers, on a virtual clock.

`TimedDevice` wraps a `Device` (one resync as one step) with what the overview's section
2.1 says about time: Resync On Reset, Resync Random Delay, Resync Periodic, Resync Error
Retry Delay, Forced Resync Delay, Provision Enable, Resync After Upgrade, Upgrade Enable,
Upgrade Error Retry Delay and Upgrade Rule, plus power-on and factory reset. Each method
quotes the sentence it follows; what the overview leaves open is marked "assumed" and
listed in docs/device-checklist.md. The settings are read from the device's stored
parameters under `SettingKeys` at the moment they matter, so a file that changes one
takes effect from the next decision on.

Fetches are real (a `Fetcher` over HTTP or TFTP) and timed in real seconds; waits are
virtual (`VirtualClock`). All timers of one device have the device as their owner, so a
clock running many devices on many threads touches each device from one thread at a time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gitprov.rule_url import RuleSyntaxError, RuleUrl, parse_rule
from gitprov.tools.device.clock import Timer, VirtualClock
from gitprov.tools.device.fetch import Fetcher, FetchError, display_url, parse_option66_server
from gitprov.tools.device.resync import Compare, Device, ResyncResult, rule_error
from gitprov.tools.device.settings import SettingKeys, Settings, factory_params
from gitprov.tools.device.state import DeviceState, Event

__all__ = ["BootCause", "FetchRecord", "TimedDevice", "TimedEvent"]

BootCause = Literal["power-on", "reset", "update", "upgrade"]
"""Why the device boots: power applied, a factory reset, applying a file, a new firmware."""


@dataclass(frozen=True)
class TimedEvent:
    """One entry of a timed device's log, at virtual time `at` (seconds).

    `kind`: "boot", "factory-reset", "resync-due", "resync-deferred", "resync" (detail:
    the result's status and version), "line", "upgrade-current", "upgrade-failed",
    "upgraded", "disabled". Details never hold a key.
    """

    at: float
    kind: str
    detail: str = ""


@dataclass(frozen=True)
class FetchRecord:
    """One request the device made: when (virtual seconds), what (the redacted URL, and
    `purpose` "config" or "firmware"), how it ended (`status`: the resync status, or
    "upgraded" / "upgrade-failed"), the version the file offered (`DBID_DBASE_VERSION`,
    or the firmware version) and how long the fetch took in real seconds."""

    at: float
    purpose: Literal["config", "firmware"]
    url: str
    status: str
    version: str | None
    latency: float

    @property
    def ok(self) -> bool:
        return self.status in ("applied", "unchanged", "upgraded")


class _Stopwatch:
    """A fetcher that remembers how long its last fetch took (real seconds)."""

    def __init__(self, inner: Fetcher) -> None:
        self.inner = inner
        self.latency: float | None = None

    def fetch(self, url: RuleUrl) -> bytes:
        started = time.perf_counter()
        try:
            return self.inner.fetch(url)
        finally:
            self.latency = time.perf_counter() - started


class TimedDevice:
    """One device on a virtual clock. Start it with `power_on()`; the clock's `run` does
    the rest. `firmware` maps an image's file name to the version its header declares:
    the real device reads it from the image, the emulator is told (e.g. from the model's
    `firmware: {file, version}`). `rng` draws the random delay (default: seeded with the
    MAC, so a run is repeatable).
    """

    def __init__(
        self,
        state: DeviceState,
        *,
        clock: VirtualClock,
        fetcher: Fetcher,
        rng: random.Random | None = None,
        firmware: Mapping[str, str] | None = None,
        compare: Compare = "!=",
        keys: SettingKeys | None = None,
    ) -> None:
        self.device = Device(state, compare=compare, keys=keys)
        self.clock = clock
        self._fetcher = _Stopwatch(fetcher)
        self.rng = rng if rng is not None else random.Random(state.mac)
        self.firmware: dict[str, str] = dict(firmware or {})
        self.log: list[TimedEvent] = []
        self.fetches: list[FetchRecord] = []
        self.results: list[ResyncResult] = []
        self._resync_timer: Timer | None = None
        self._upgrade_retry: Timer | None = None
        self._countdown: Timer | None = None
        self._active_lines: set[int] = set()
        self._deferred: str | None = None  # why the resync that waits for idle lines is due

    def __repr__(self) -> str:
        return f"<TimedDevice {self.state.mac} version={self.state.version!r}>"

    @property
    def state(self) -> DeviceState:
        return self.device.state

    @property
    def keys(self) -> SettingKeys:
        return self.device.keys

    @property
    def settings(self) -> Settings:
        return self.device.settings

    # --- what happens to the device ----------------------------------------------------

    def power_on(self) -> None:
        """Power applied: boot, then resync as Resync On Reset and Random Delay say."""
        self._boot("power-on")

    def power_off(self) -> None:
        """Power removed: every timer stops; the stored parameters stay."""
        self._stop_timers()
        self._note("power-off")

    def factory_reset(self) -> None:
        """Back to the factory state, then boot.

        Assumed (the overview does not describe a factory reset): every stored parameter
        is forgotten, so the device has no key and no version, option 66 is on and the
        Profile Rule empty (the overview's defaults, 2.1: Option 66 "Yes", Profile Rule
        "Empty"), every other setting at its default. The firmware, and so `$SWVER`,
        stays. The boot that follows is a reset: Random Delay applies ("effective only on
        the initial configuration attempt following device power-on or reset").
        """
        self._stop_timers()
        self.state.params.clear()
        self.state.params.update(factory_params(self.keys))
        self.state.history.append(Event("factory-reset"))
        self._note("factory-reset")
        self._boot("reset")

    def set_line(self, line: int, active: bool) -> None:
        """A phone line goes off hook (`active`) or back on hook.

        The overview, 2.1 (Forced Resync Delay): "The device does not resync while one of
        its phone lines is active." and "The device has a timer that begins counting down
        when all of its lines become idle. This parameter is the initial value of the
        counter. Resync events are delayed until this counter decrements to zero."
        Assumed: a line becoming active stops the countdown, which starts again from the
        full delay when all lines are idle again; at power-on the counter is zero (else
        the first resync would wait 14,400 s, against Random Delay's 40 s).
        """
        self._note("line", f"{line} {'active' if active else 'idle'}")
        if active:
            self._active_lines.add(line)
            self._cancel("_countdown")
            return
        self._active_lines.discard(line)
        if self._active_lines or self._countdown is not None:
            return
        delay = self.settings.forced_resync_delay
        self._countdown = self.clock.call_later(delay, self._countdown_done, owner=self)

    # --- boot and the resync timers ----------------------------------------------------

    def _boot(self, cause: BootCause) -> None:
        """Start (again) after `cause`; which resync comes first depends on it.

        Provision Enable off: no resync is ever scheduled (the overview, 2.1: "Enable or
        disable the Provision functions."; assumed: upgrades are provision functions too).

        After power-on or a reset, with Resync On Reset ("Triggers a resync after every
        reboot except for reboot caused by parameter updates and firmware upgrades."), the
        first resync waits a random delay (Resync Random Delay: "The delay is a
        pseudo-random number between zero and this value." ... "This feature is disabled
        when this parameter is set to zero."), uniform in [0, delay] seconds.

        After a reboot caused by applying a file, no resync on reset: the next resync is
        the periodic one. After an upgrade, Resync After Upgrade ("Triggers a resync after
        every firmware upgrade attempt.") resyncs at once.

        Assumed: without a resync at boot the periodic timer counts from the boot, and
        lines are idle after a boot.
        """
        self._stop_timers()
        self._active_lines.clear()
        self._deferred = None
        self._note("boot", cause)
        settings = self.settings
        if not settings.provision_enable:
            self._note("disabled", f"Provision Enable is off ({self.keys.provision_enable}=0)")
            return
        if cause in ("power-on", "reset") and settings.resync_on_reset:
            delay = self.rng.uniform(0, settings.random_delay) if settings.random_delay else 0.0
            self._schedule_resync(delay, "reset")
        elif cause == "upgrade" and settings.resync_after_upgrade:
            self._schedule_resync(0.0, "after-upgrade")
        else:
            self._schedule_periodic()

    def _schedule_periodic(self) -> None:
        """The overview, 2.1 (Resync Periodic): "The time interval between periodic
        resyncs with the provisioning server. Set this parameter to zero to disable
        periodic resyncing." """
        periodic = self.settings.resync_periodic
        if periodic > 0:
            self._schedule_resync(periodic, "periodic")
        else:
            self._cancel("_resync_timer")

    def _schedule_resync(self, delay: float, why: str) -> None:
        self._cancel("_resync_timer")
        self._resync_timer = self.clock.call_later(delay, lambda: self._resync_due(why), owner=self)

    def _resync_due(self, why: str) -> None:
        self._resync_timer = None
        if not self.settings.provision_enable:
            self._note("disabled", f"Provision Enable is off ({self.keys.provision_enable}=0)")
            return
        self._note("resync-due", why)
        if self._active_lines or self._countdown is not None:
            self._deferred = why
            self._note("resync-deferred", "a line is active or the forced-delay countdown runs")
            return
        self._resync(why)

    def _countdown_done(self) -> None:
        self._countdown = None
        if self._deferred is not None and not self._active_lines:
            why, self._deferred = self._deferred, None
            self._resync(why)

    def _resync(self, why: str) -> None:
        """Resync now, then schedule the next one.

        Applied: the device reboots (see `_boot`, cause "update"). Unchanged: the periodic
        timer restarts, then the Upgrade Rule is looked at. Failed: the overview, 2.1
        (Resync Error Retry Delay): "If the last resync was failure, IP542N will retry
        resync after the “Resync Error Retry Delay” time". Assumed: a retry delay of 0
        means no retry (the periodic timer goes on), like the other delays' zero.
        """
        self._fetcher.latency = None
        result = self.device.resync(self._fetcher)
        self.results.append(result)
        if self._fetcher.latency is not None:
            self.fetches.append(
                FetchRecord(
                    self.clock.now,
                    "config",
                    result.url,
                    result.status,
                    result.version_offered,
                    self._fetcher.latency,
                )
            )
        version = result.version_after if result.version_after is not None else "(none)"
        self._note("resync", f"{why}: {result.status}, version {version}")
        if result.status == "applied":
            self._boot("update")
        elif result.status == "unchanged":
            self._schedule_periodic()
            if why != "after-upgrade":
                self._consider_upgrade()
        elif result.status != "disabled":
            retry = self.settings.error_retry_delay
            if retry > 0:
                self._schedule_resync(retry, "retry")
            else:
                self._schedule_periodic()

    # --- upgrades ----------------------------------------------------------------------

    def _consider_upgrade(self) -> None:
        """Upgrade when the Upgrade Rule's image is not the running firmware.

        The overview, 2.1: Upgrade Enable "Enables firmware upgrade operations
        independently of resync actions"; the Upgrade Rule "is a firmware upgrade script
        with the same syntax as Profile Rule". 4.2: "User can not realize upgrading with
        HTTPS, please refer to HTTP or TFTP to realize it."

        Assumed: the device looks at its Upgrade Rule after each resync that found its
        file current (but not the one Resync After Upgrade triggers), and compares the
        image's version with its own `$SWVER`: the same version is not fetched again,
        another one is fetched and installed, then `$SWVER` is the new version and the
        device reboots. After a failed attempt nothing is tried
        until Upgrade Error Retry Delay has passed ("The next firmware upgrade attempt
        occurs when this timer counts down to zero.").
        """
        settings = self.settings
        if not settings.upgrade_enable or not settings.upgrade_rule.strip():
            return
        if self._upgrade_retry is not None:
            return  # the error timer decides when the next attempt is
        self._upgrade(settings)

    def _upgrade(self, settings: Settings) -> None:
        text = settings.upgrade_rule
        try:
            rule = parse_rule(text)
        except RuleSyntaxError as exc:
            self._upgrade_failed(f"the Upgrade Rule does not parse: {rule_error(text, exc)}", None)
            return
        if rule.scheme == "https":
            self._upgrade_failed(
                "the device cannot upgrade over HTTPS (overview 4.2); serve it over http:// "
                "or tftp://",
                None,
            )
            return
        if not rule.host:
            try:
                if self.state.option66_server is None:
                    raise ValueError("the Upgrade Rule names no server and DHCP gave no option 66")
                host, port = parse_option66_server(self.state.option66_server)
            except ValueError as exc:
                self._upgrade_failed(str(exc), None)
                return
            rule = rule._replace(host=host, port=port)
        url = self.device.expanded(rule)
        shown = display_url(url)
        name = url.path.rsplit("/", 1)[-1]
        offered = self.firmware.get(name)
        running = self.state.sw_version
        if offered is not None and offered == running:
            self._note("upgrade-current", f"{shown}: version {offered} is running")
            return
        started = time.perf_counter()
        try:
            self._fetcher.inner.fetch(url)
        except (FetchError, OSError) as exc:
            detail = exc.message if isinstance(exc, FetchError) else f"{shown}: {exc}"
            self._record_firmware(shown, "upgrade-failed", offered, started)
            self._upgrade_failed(detail, shown)
            return
        if offered is None:
            self._record_firmware(shown, "upgrade-failed", None, started)
            self._upgrade_failed(f"{shown}: the emulator does not know this image's version", shown)
            return
        self._record_firmware(shown, "upgraded", offered, started)
        self.state.sw_version = offered
        self.state.history.append(Event("upgraded", f"{running or '(none)'} -> {offered}"))
        self._note("upgraded", f"{shown}: {running or '(none)'} -> {offered}")
        self._boot("upgrade")

    def _record_firmware(
        self, shown: str, status: str, version: str | None, started: float
    ) -> None:
        latency = time.perf_counter() - started
        self.fetches.append(
            FetchRecord(self.clock.now, "firmware", shown, status, version, latency)
        )

    def _upgrade_failed(self, detail: str, shown: str | None) -> None:
        self._note("upgrade-failed", detail)
        settings = self.settings
        if settings.upgrade_error_retry_delay > 0:
            self._upgrade_retry = self.clock.call_later(
                settings.upgrade_error_retry_delay, self._upgrade_retry_due, owner=self
            )
        if settings.resync_after_upgrade and shown is not None:
            self._schedule_resync(0.0, "after-upgrade")

    def _upgrade_retry_due(self) -> None:
        self._upgrade_retry = None
        settings = self.settings
        if settings.provision_enable and settings.upgrade_enable and settings.upgrade_rule:
            self._upgrade(settings)

    # --- bookkeeping -------------------------------------------------------------------

    def _note(self, kind: str, detail: str = "") -> None:
        self.log.append(TimedEvent(self.clock.now, kind, detail))

    def _cancel(self, attribute: str) -> None:
        timer: Timer | None = getattr(self, attribute)
        if timer is not None:
            timer.cancel()
            setattr(self, attribute, None)

    def _stop_timers(self) -> None:
        for attribute in ("_resync_timer", "_upgrade_retry", "_countdown"):
            self._cancel(attribute)
