"""GP109 tab-in-value: a TAB inside a value that is not a raw per-line row.

In param.conf a TAB separates the values of the lines of a per-line parameter
(`DBID_SIP_ENABLE=1<TAB>0<TAB>0<TAB>0`). A TAB inside a global parameter's value, or
inside one line's value, would shift the device's reading of the lines that follow.
The only place a TAB belongs is a raw DBID_* key the catalog does not know, written as a
whole row (that is how an unknown per-line parameter is set).

Fails:   `params: {sip.server: "sip.example.net\\t"}` or `lines: [{display_name: "A\\tB"}]`
Passes:  `params: {DBID_VENDOR_ROW: "1\\t0\\t0\\t0"}` (unknown key: a whole row)
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rules import DocContext, error_at

CODE = "GP109"
NAME = "tab-in-value"


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for name, value in dctx.params():
        if not isinstance(value, str) or "\t" not in value:
            continue
        param = dctx.catalog.lookup(name)
        if param is None and dctx.catalog.unpublished_named(name) is None:
            continue  # an unknown raw key: a TAB-separated row on purpose
        if param is not None and param.per_line:
            continue  # a per-line key under params: GP123 says where it belongs
        yield error_at(
            doc,
            ("params", name),
            CODE,
            f"params.{name}: the value contains a TAB",
            "remove the TAB: in param.conf it separates the values of SIP lines",
        )
    for slot, item in dctx.line_items():
        for name, value in item.items():
            if isinstance(value, str) and "\t" in value:
                yield error_at(
                    doc,
                    ("lines", slot, name),
                    CODE,
                    f"lines.{slot}.{name}: the value contains a TAB",
                    "remove the TAB: it would shift the values of the following lines",
                )
