"""Which DBID key holds each provisioning setting, and what the device reads from it.

The vendor overview (section 2.1) names the provisioning settings and their defaults but
publishes the DBID key of only two: `DBID_DBASE_VERSION` and `DBID_PRV_OPTION66_ENABLED`.
`DBID_PROFILE_RULE` is a name seen on Flying Voice devices, not one the overview prints.
Every other key here is a placeholder until someone reads the real one from a device's
exported configuration: `SettingKeys` holds them all, each one replaceable, so that the
emulator reads the same keys the inventory's model bindings write.

A stored value the device cannot read (not `0`/`1` for a switch, not a whole number of
seconds) counts as the setting's default. Assumed: the overview does not say what the
firmware does with such a value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CATALOG_NAMES",
    "OPTION66_KEY",
    "PROFILE_RULE_KEY",
    "VERSION_KEY",
    "SettingKeys",
    "Settings",
    "factory_params",
]

VERSION_KEY = "DBID_DBASE_VERSION"
"""Published: the overview's section 5 and every notice of section 4."""
OPTION66_KEY = "DBID_PRV_OPTION66_ENABLED"
"""Published: the overview, 4.3.3 ("set DBID_PRV_OPTION66_ENABLED=0 in configuration
file") and section 5."""
PROFILE_RULE_KEY = "DBID_PROFILE_RULE"
"""Not in the overview: a name seen on Flying Voice devices. Replaceable like the rest."""

_KEY = re.compile(r"DBID_[A-Z0-9_]+")


@dataclass(frozen=True)
class SettingKeys:
    """The DBID key of each setting the emulator reads from its stored parameters.

    Only `option66` is published by the vendor; the defaults of the others are
    placeholders named after the overview's labels. Replace them with
    `SettingKeys.from_mapping({"resync_periodic": "DBID_…"})` (or `gitprov probe
    --setting-key resync_periodic=DBID_…`) once the real key is known, e.g. from the
    model's binding in the inventory.
    """

    option66: str = OPTION66_KEY
    profile_rule: str = PROFILE_RULE_KEY
    provision_enable: str = "DBID_PROVISION_ENABLE"
    resync_on_reset: str = "DBID_RESYNC_ON_RESET"
    random_delay: str = "DBID_RESYNC_RANDOM_DELAY"
    resync_periodic: str = "DBID_RESYNC_PERIODIC"
    error_retry_delay: str = "DBID_RESYNC_ERROR_RETRY_DELAY"
    forced_resync_delay: str = "DBID_FORCED_RESYNC_DELAY"
    resync_after_upgrade: str = "DBID_RESYNC_AFTER_UPGRADE"
    upgrade_enable: str = "DBID_UPGRADE_ENABLE"
    upgrade_error_retry_delay: str = "DBID_UPGRADE_ERROR_RETRY_DELAY"
    upgrade_rule: str = "DBID_UPGRADE_RULE"

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for name, key in self.as_dict().items():
            if not isinstance(key, str) or not _KEY.fullmatch(key) or key == VERSION_KEY:
                raise ValueError(
                    f"setting {name}: {key!r} is not a DBID key; write DBID_ and upper-case "
                    f"letters, digits or _ (not {VERSION_KEY})"
                )
            if key in seen:
                raise ValueError(f"settings {seen[key]} and {name} both name {key}")
            seen[key] = name

    def as_dict(self) -> dict[str, str]:
        """Setting name → DBID key, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, str]) -> SettingKeys:
        """The defaults with `overrides` replaced. A name is a field of this class
        (`resync_periodic`) or the catalog's readable name (`provision.resync_periodic`).
        Raises ValueError naming an unknown setting or a key that is not `DBID_*`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        by_catalog = {catalog: name for name, catalog in CATALOG_NAMES.items()}
        changes: dict[str, str] = {}
        for given, key in overrides.items():
            name = by_catalog.get(given, given)
            if name not in fields:
                known = ", ".join(sorted(fields))
                raise ValueError(f"unknown setting {given!r}; the settings are: {known}")
            changes[name] = key
        return cls(**changes)

    @classmethod
    def from_bindings(cls, bindings: Mapping[str, str]) -> SettingKeys:
        """The keys a model's bindings give (catalog name → DBID key, as in
        `models/NAME.yaml` `bindings:`); bindings of other parameters are not settings
        the emulator reads and are left out."""
        wanted = set(CATALOG_NAMES.values())
        return cls.from_mapping({name: key for name, key in bindings.items() if name in wanted})

    @classmethod
    def parse(cls, entries: Iterable[str]) -> SettingKeys:
        """`NAME=DBID_KEY` entries (the CLI's `--setting-key`), as `from_mapping`."""
        overrides: dict[str, str] = {}
        for entry in entries:
            name, sep, key = entry.partition("=")
            if not sep or not name:
                raise ValueError(f"{entry!r}: write NAME=DBID_KEY, e.g. resync_periodic=DBID_X")
            overrides[name.strip()] = key.strip()
        return cls.from_mapping(overrides)


CATALOG_NAMES: dict[str, str] = {
    "option66": "provision.option66",
    "profile_rule": "provision.profile_rule",
    "provision_enable": "provision.enable",
    "resync_on_reset": "provision.resync_on_reset",
    "random_delay": "provision.resync_random_delay",
    "resync_periodic": "provision.resync_periodic",
    "error_retry_delay": "provision.resync_error_retry_delay",
    "forced_resync_delay": "provision.forced_resync_delay",
    "resync_after_upgrade": "provision.resync_after_upgrade",
    "upgrade_enable": "provision.upgrade_enable",
    "upgrade_error_retry_delay": "provision.upgrade_error_retry_delay",
    "upgrade_rule": "provision.upgrade_rule",
}
"""Setting name → the readable name the parameter catalog (schemas/params.yaml) gives it."""


def factory_params(keys: SettingKeys | None = None) -> dict[str, str]:
    """What a factory-fresh device stores: option 66 on, an empty Profile Rule (overview
    2.1: Option 66 "Yes", Profile Rule "Empty"), no version (any version is new to it).
    Every other setting is absent, so it has its default (`Settings`)."""
    keys = keys or SettingKeys()
    return {keys.option66: "1", keys.profile_rule: ""}


@dataclass(frozen=True)
class Settings:
    """The provisioning settings as the device reads them; defaults from the overview's
    table in section 2.1 ("Default Value")."""

    option66: bool = True
    profile_rule: str = ""
    provision_enable: bool = True
    resync_on_reset: bool = True
    random_delay: int = 40
    resync_periodic: int = 3600
    error_retry_delay: int = 3600
    forced_resync_delay: int = 14400
    resync_after_upgrade: bool = True
    upgrade_enable: bool = True
    upgrade_error_retry_delay: int = 3600
    upgrade_rule: str = ""

    @classmethod
    def read(cls, params: Mapping[str, str], keys: SettingKeys) -> Settings:
        """The settings stored in `params` under `keys`; absent or unreadable: default."""
        defaults = cls()
        values: dict[str, object] = {}
        for name, key in keys.as_dict().items():
            default = getattr(defaults, name)
            text = params.get(key)
            if text is None:
                continue
            if isinstance(default, bool):
                if text in ("0", "1"):
                    values[name] = text == "1"
            elif isinstance(default, int):
                if text.isascii() and text.isdigit():
                    values[name] = int(text)
            else:
                values[name] = text
        return dataclasses.replace(defaults, **values)  # type: ignore[arg-type]
