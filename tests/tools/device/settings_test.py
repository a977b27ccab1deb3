"""Which DBID key holds which setting, and how stored values read."""

from __future__ import annotations

import pytest

from gitprov.tools.device.settings import CATALOG_NAMES, SettingKeys, Settings, factory_params


def test_defaults_are_the_overviews() -> None:
    # The overview, 2.1, column "Default Value", spelled out.
    assert Settings() == Settings(
        option66=True,
        profile_rule="",
        provision_enable=True,
        resync_on_reset=True,
        random_delay=40,
        resync_periodic=3600,
        error_retry_delay=3600,
        forced_resync_delay=14400,
        resync_after_upgrade=True,
        upgrade_enable=True,
        upgrade_error_retry_delay=3600,
        upgrade_rule="",
    )
    assert factory_params() == {"DBID_PRV_OPTION66_ENABLED": "1", "DBID_PROFILE_RULE": ""}


def test_the_default_keys() -> None:
    assert SettingKeys().as_dict() == {
        "option66": "DBID_PRV_OPTION66_ENABLED",
        "profile_rule": "DBID_PROFILE_RULE",
        "provision_enable": "DBID_PROVISION_ENABLE",
        "resync_on_reset": "DBID_RESYNC_ON_RESET",
        "random_delay": "DBID_RESYNC_RANDOM_DELAY",
        "resync_periodic": "DBID_RESYNC_PERIODIC",
        "error_retry_delay": "DBID_RESYNC_ERROR_RETRY_DELAY",
        "forced_resync_delay": "DBID_FORCED_RESYNC_DELAY",
        "resync_after_upgrade": "DBID_RESYNC_AFTER_UPGRADE",
        "upgrade_enable": "DBID_UPGRADE_ENABLE",
        "upgrade_error_retry_delay": "DBID_UPGRADE_ERROR_RETRY_DELAY",
        "upgrade_rule": "DBID_UPGRADE_RULE",
    }
    assert set(CATALOG_NAMES) == set(SettingKeys().as_dict())


def test_overrides_by_field_or_catalog_name() -> None:
    keys = SettingKeys.from_mapping(
        {"resync_periodic": "DBID_PRV_PERIODIC", "provision.upgrade_rule": "DBID_UPG_RULE"}
    )
    assert (keys.resync_periodic, keys.upgrade_rule) == ("DBID_PRV_PERIODIC", "DBID_UPG_RULE")
    assert keys.random_delay == "DBID_RESYNC_RANDOM_DELAY"
    assert SettingKeys.parse(["random_delay = DBID_RD"]).random_delay == "DBID_RD"
    factory = factory_params(SettingKeys(option66="DBID_OPT66", profile_rule="DBID_RULE"))
    assert factory == {"DBID_OPT66": "1", "DBID_RULE": ""}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"resync": "DBID_X"}, "unknown setting 'resync'; the settings are: "),
        ({"resync_periodic": "dbid_x"}, "setting resync_periodic: 'dbid_x' is not a DBID key"),
        ({"resync_periodic": "DBID_DBASE_VERSION"}, "is not a DBID key"),
        ({"resync_periodic": "DBID_RESYNC_RANDOM_DELAY"}, "random_delay and resync_periodic"),
    ],
)
def test_bad_overrides(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        SettingKeys.from_mapping(overrides)
    assert message in str(caught.value)


def test_read_values_and_unreadable_ones_keep_the_default() -> None:
    keys = SettingKeys(resync_periodic="DBID_P")
    params = {
        "DBID_P": "600",
        "DBID_RESYNC_PERIODIC": "5",  # the placeholder key: not the device's key here
        "DBID_PROVISION_ENABLE": "0",
        "DBID_RESYNC_ON_RESET": "yes",
        "DBID_RESYNC_RANDOM_DELAY": "-3",
        "DBID_UPGRADE_RULE": "http://h/fw.bin",
        "DBID_PRV_OPTION66_ENABLED": "0",
    }
    settings = Settings.read(params, keys)
    assert settings.resync_periodic == 600
    assert settings.provision_enable is False
    assert settings.resync_on_reset is True
    assert settings.random_delay == 40
    assert settings.upgrade_rule == "http://h/fw.bin"
    assert settings.option66 is False


def test_from_a_models_bindings() -> None:
    keys = SettingKeys.from_bindings(
        {
            "provision.resync_periodic": "DBID_PRV_RESYNC_PERIODIC",
            "provision.upgrade_rule": "DBID_UPGRADE_URL",
            "sip.some_param": "DBID_SOMETHING",  # not a setting the emulator reads
        }
    )
    assert keys == SettingKeys(
        resync_periodic="DBID_PRV_RESYNC_PERIODIC", upgrade_rule="DBID_UPGRADE_URL"
    )
