"""A device emulator: what a Flying Voice IP542N / G502N does when it provisions.

For tests, `gitprov probe` and boot-storm benchmarks. It follows the vendor's
Auto-Provision Overview (Flying Voice, January 2018; "the overview" in docstrings, whose
sections are cited by number) and, where that is silent, the Linksys/Cisco SPA
provisioning model the overview copies; every such choice is marked "assumed" where it
is made, and docs/device-checklist.md lists how to check each on a real device.

- `resync`: one resync as one step (source, fetch, decrypt, parse, compare, apply).
- `timeline`: when a device resyncs and upgrades, on a virtual clock (`clock`):
  power-on, Resync On Reset, Random Delay, Resync Periodic, Error Retry Delay, Forced
  Resync Delay, Provision Enable, Upgrade Enable/Rule with `$SWVER`, factory reset.
- `fleet`: many timed devices on one virtual clock against real servers (boot storms).
- `settings`: which DBID key holds which setting (`SettingKeys`, replaceable).
- `fetch`, `paramfile`, `state`, `probe`: HTTP/TFTP clients, the strict file parser,
  the device's stored state, and `gitprov probe`.

Keys never appear in results, history, reprs or output: URLs are shown with
`[--key <redacted>]`.
"""

from gitprov.tools.device.clock import Timer, VirtualClock
from gitprov.tools.device.fetch import (
    MAX_FILE_BYTES,
    REDACTED,
    Fetcher,
    FetchError,
    HostOverride,
    HttpFetcher,
    MultiFetcher,
    TftpFetcher,
    display_url,
    parse_option66_server,
)
from gitprov.tools.device.fleet import DeviceReport, Fleet, FleetReport, loopback_address, run_fleet
from gitprov.tools.device.paramfile import ParamFileError, parse_param_file
from gitprov.tools.device.probe import ProbeOptions, probe
from gitprov.tools.device.resync import Compare, Device, ResyncResult, Source, Status
from gitprov.tools.device.settings import (
    CATALOG_NAMES,
    OPTION66_KEY,
    PROFILE_RULE_KEY,
    VERSION_KEY,
    SettingKeys,
    Settings,
    factory_params,
)
from gitprov.tools.device.state import DeviceState, Event, load_state, save_state
from gitprov.tools.device.timeline import FetchRecord, TimedDevice, TimedEvent

__all__ = [
    "CATALOG_NAMES",
    "MAX_FILE_BYTES",
    "OPTION66_KEY",
    "PROFILE_RULE_KEY",
    "REDACTED",
    "VERSION_KEY",
    "Compare",
    "Device",
    "DeviceReport",
    "DeviceState",
    "Event",
    "FetchError",
    "FetchRecord",
    "Fetcher",
    "Fleet",
    "FleetReport",
    "HostOverride",
    "HttpFetcher",
    "MultiFetcher",
    "ParamFileError",
    "ProbeOptions",
    "ResyncResult",
    "SettingKeys",
    "Settings",
    "Source",
    "Status",
    "TftpFetcher",
    "TimedDevice",
    "TimedEvent",
    "Timer",
    "VirtualClock",
    "display_url",
    "factory_params",
    "load_state",
    "loopback_address",
    "parse_option66_server",
    "parse_param_file",
    "probe",
    "run_fleet",
    "save_state",
]
