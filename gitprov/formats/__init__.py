"""Renderers, one per device family: the only code that knows a device file's bytes."""

from __future__ import annotations

from collections.abc import Callable

from gitprov.compile import DeviceConfig
from gitprov.formats import flyingvoice

Renderer = Callable[[DeviceConfig, int | None], bytes]

RENDERERS: dict[str, Renderer] = {"flyingvoice": flyingvoice.render}


def render(config: DeviceConfig, version: int | None) -> bytes:
    return RENDERERS[config.family](config, version)
