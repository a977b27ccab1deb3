"""GP112 device-file-name (warning): a device file is not named after its MAC.

One file per device, named by its MAC in lower-case hex, makes "which file is device X?"
a lookup, and two files for one MAC impossible to miss in a review.

Fails:   devices/reception.yaml with `mac: "00:21:f2:01:1b:19"`
Passes:  devices/0021f2011b19.yaml with `mac: "00:21:f2:01:1b:19"` (any MAC spelling)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DEVICE, stem
from gitprov.macros import normalise_mac
from gitprov.rules import DocContext, get, warning_at

CODE = "GP112"
NAME = "device-file-name"


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    if dctx.kind != DEVICE:
        return
    raw = get(doc.data, "mac")
    mac = normalise_mac(raw) if isinstance(raw, str) else None
    if mac is not None and normalise_mac(stem(doc.path)) != mac:
        yield warning_at(
            doc,
            ("mac",),
            CODE,
            f"{doc.path} holds MAC {mac}, but its name says otherwise",
            f"rename it to {mac}.yaml (in the same directory)",
        )
