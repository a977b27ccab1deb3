"""GP120 upgrade-over-https: a firmware Upgrade Rule that uses https://.

The vendor overview (4.2): "User can not realize upgrading with HTTPS, please refer to
HTTP or TFTP". The device would never fetch the firmware, and it does not retry until the
expanded URL changes.

Fails:   `params: {provision.upgrade_rule: "https://fw.example.com/G502_F107_S334.bin"}`
Passes:  `params: {provision.upgrade_rule: "http://fw.example.com/G502_F107_S334.bin"}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rule_url import RuleSyntaxError, parse_rule
from gitprov.rules import DocContext, error_at
from gitprov.rules.rule_url import url_params

CODE = "GP120"
NAME = "upgrade-over-https"

UPGRADE_RULE = "provision.upgrade_rule"


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    for path, value, _ in url_params(dctx):
        if path[-1] != UPGRADE_RULE:
            continue
        try:
            url = parse_rule(value)
        except RuleSyntaxError:
            continue  # GP110 reports it
        if url.scheme == "https":
            yield error_at(
                doc,
                path,
                CODE,
                "the device cannot upgrade firmware over HTTPS",
                "serve the firmware over http:// or tftp:// (vendor overview, 4.2)",
            )
