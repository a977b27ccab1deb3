"""GP120 upgrade-over-https: a firmware Upgrade Rule that uses https://.

The vendor overview (4.2): "User can not realize upgrading with HTTPS, please refer to
HTTP or TFTP". The device would never fetch the firmware, and it does not retry until the
expanded URL changes.

Checked wherever an Upgrade Rule is written: `provision.upgrade_rule`, the raw key a model
binds it to, and each model's firmware rule (`firmware.rule`, or its default
provisioning.url/FILE, which is https:// when the devices resync over HTTPS).

Fails:   `params: {provision.upgrade_rule: "https://fw.example.com/G502_F107_S334.bin"}`
Passes:  `params: {provision.upgrade_rule: "http://fw.example.com/G502_F107_S334.bin"}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.rule_url import RuleSyntaxError, parse_rule
from gitprov.rules import DocContext, RuleContext, error_at
from gitprov.rules._bindings import bound_values, firmware_rules
from gitprov.rules.rule_url import url_params
from gitprov.yamldoc import Document, Path_

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


def _https(rule: str) -> bool:
    try:
        return parse_rule(rule).scheme == "https"
    except RuleSyntaxError:
        return False  # GP110 reports it


def _problem(doc: Document, path: Path_, what: str, hint: str) -> Problem:
    return error_at(doc, path, CODE, f"{what}: the device cannot upgrade firmware over HTTPS", hint)


def check(ctx: RuleContext) -> Iterator[Problem]:
    hint = "serve the firmware over http:// or tftp:// (vendor overview, 4.2)"
    for found in bound_values(ctx, NAME):
        if not any(e.name == UPGRADE_RULE for e in found.entries):
            continue
        if isinstance(found.value, str) and _https(found.value):
            yield _problem(found.doc, found.path, f"{found.key} ({UPGRADE_RULE})", hint)
    for fw in firmware_rules(ctx):
        if not _https(fw.rule):
            continue
        if fw.given:
            yield _problem(fw.doc, fw.path, "firmware.rule", hint)
        else:
            yield _problem(
                fw.doc,
                fw.path,
                f"the Upgrade Rule {fw.rule} (provisioning.url/FILE, as no firmware.rule is given)",
                "set firmware.rule to where the image is served over http:// or tftp://, "
                "e.g. http://SERVER/FILE (vendor overview, 4.2)",
            )
