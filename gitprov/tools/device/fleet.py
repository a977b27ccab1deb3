"""Many emulated devices on one virtual clock against real servers: boot storms.

    fleet = Fleet([DeviceState(mac, ip=loopback_address(i), ...) for i, mac in ...])
    fleet.power_on()                       # a power cut ends: every device boots at once
    report = fleet.run(until=120, workers=32)
    report.requests_per_second, report.slowest

Every device waits its own Random Delay (virtual), then fetches for real (HTTP, HTTPS or
TFTP, as its settings say) on one of `workers` threads, in the order of the devices'
virtual times. So the servers see up to `workers` requests at once, as from a fleet
whose delays have spread it over the delay window, and the report gives what each device
fetched, the version it holds, and each fetch's real latency.

A device's address (`DeviceState.ip`, also its `$IP`) is the source address of its
requests when set: on Linux all of 127.0.0.0/8 reaches loopback servers, so a thousand
devices are a thousand clients to the server's per-client limits and to its fetch log
(`loopback_address`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gitprov.tools.device.clock import VirtualClock
from gitprov.tools.device.fetch import Fetcher, MultiFetcher
from gitprov.tools.device.resync import Compare
from gitprov.tools.device.settings import SettingKeys
from gitprov.tools.device.state import DeviceState
from gitprov.tools.device.timeline import FetchRecord, TimedDevice

__all__ = ["DeviceReport", "Fleet", "FleetReport", "loopback_address", "run_fleet"]

FetcherFactory = Callable[[DeviceState], Fetcher]


def loopback_address(index: int) -> str:
    """The `index`-th (from 0) address of 127.1.0.1 … 127.1.255.254: a device's own
    loopback source address. Raises ValueError past 65,024 devices."""
    if not 0 <= index < 254 * 256:
        raise ValueError(f"no loopback address for device {index}")
    return f"127.1.{index // 254}.{index % 254 + 1}"


def standard_fetcher(timeout: float = 5.0) -> FetcherFactory:
    """HTTP and TFTP (`MultiFetcher.standard`) from the device's address, if it has one."""

    def make(state: DeviceState) -> Fetcher:
        return MultiFetcher.standard(timeout=timeout, source_address=state.ip or None)

    return make


@dataclass(frozen=True)
class DeviceReport:
    """One device after a run: every fetch it made, the version it holds now
    (`DBID_DBASE_VERSION`, None if it never applied a file), its firmware version, and
    the last configuration file it fetched (redacted URL) with that fetch's status."""

    mac: str
    address: str
    fetches: tuple[FetchRecord, ...]
    version: str | None
    sw_version: str
    last_url: str | None
    last_status: str | None


@dataclass(frozen=True)
class FleetReport:
    """What a fleet did so far: per device, and the requests over the real time the clock
    ran (`wall_seconds`, summed over `Fleet.run` calls)."""

    devices: tuple[DeviceReport, ...]
    wall_seconds: float
    virtual_seconds: float

    @property
    def fetches(self) -> list[tuple[str, FetchRecord]]:
        """Every fetch of every device, as (MAC, record)."""
        return [(d.mac, f) for d in self.devices for f in d.fetches]

    @property
    def requests(self) -> int:
        return sum(len(d.fetches) for d in self.devices)

    @property
    def failed(self) -> int:
        return sum(1 for d in self.devices for f in d.fetches if not f.ok)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def slowest(self) -> tuple[str, FetchRecord] | None:
        """The fetch with the highest real latency, with its device's MAC."""
        everything = self.fetches
        return max(everything, key=lambda pair: pair[1].latency) if everything else None

    def by_mac(self) -> dict[str, DeviceReport]:
        return {d.mac: d for d in self.devices}


class Fleet:
    """Timed devices sharing one virtual clock. `seed` makes every device's random
    delay repeatable (each device draws from its own generator, seeded with the seed and
    its MAC, so adding a device does not move the others)."""

    def __init__(
        self,
        states: Iterable[DeviceState],
        *,
        fetcher: FetcherFactory | None = None,
        clock: VirtualClock | None = None,
        seed: int = 0,
        firmware: Mapping[str, str] | None = None,
        compare: Compare = "!=",
        keys: SettingKeys | None = None,
    ) -> None:
        self.clock = clock or VirtualClock()
        make = fetcher or standard_fetcher()
        self.devices: list[TimedDevice] = []
        seen: set[str] = set()
        for state in states:
            if state.mac in seen:
                raise ValueError(f"MAC {state.mac} is given twice")
            seen.add(state.mac)
            self.devices.append(
                TimedDevice(
                    state,
                    clock=self.clock,
                    fetcher=make(state),
                    rng=random.Random(f"{seed}:{state.mac}"),
                    firmware=firmware,
                    compare=compare,
                    keys=keys,
                )
            )
        self._wall = 0.0

    def power_on(self, at: float | None = None) -> None:
        """Every device boots at virtual time `at` (default: now)."""
        when = self.clock.now if at is None else at
        for device in self.devices:
            self.clock.call_at(when, device.power_on, owner=device)

    def run(self, until: float, *, workers: int = 16) -> FleetReport:
        """Run the clock to virtual time `until` with up to `workers` devices working at
        once; the report of everything so far."""
        started = time.perf_counter()
        try:
            self.clock.run(until, workers=workers)
        finally:
            self._wall += time.perf_counter() - started
        return self.report()

    def report(self) -> FleetReport:
        devices = []
        for device in self.devices:
            configs = [f for f in device.fetches if f.purpose == "config"]
            devices.append(
                DeviceReport(
                    device.state.mac,
                    device.state.ip,
                    tuple(device.fetches),
                    device.state.version,
                    device.state.sw_version,
                    configs[-1].url if configs else None,
                    configs[-1].status if configs else None,
                )
            )
        return FleetReport(tuple(devices), self._wall, self.clock.now)


def run_fleet(
    states: Sequence[DeviceState],
    *,
    until: float,
    workers: int = 16,
    fetcher: FetcherFactory | None = None,
    seed: int = 0,
    firmware: Mapping[str, str] | None = None,
    compare: Compare = "!=",
    keys: SettingKeys | None = None,
) -> FleetReport:
    """A boot storm in one call: every device powers on at virtual time 0, the clock runs
    to `until`; the report."""
    fleet = Fleet(states, fetcher=fetcher, seed=seed, firmware=firmware, compare=compare, keys=keys)
    fleet.power_on()
    return fleet.run(until, workers=workers)
