"""GP110 bad-rule-url: a Profile Rule or Upgrade Rule the device could not parse.

Checked: the fleet's `provisioning.url` (as the Profile Rule gitprov writes from it, with
the file name appended), every URL-typed parameter (`provision.upgrade_rule`, also as the
raw key a model binds it to) and each model's `firmware.rule`. Syntax:
`[--key K] scheme://server[:port]/path`, schemes tftp, http, https (vendor overview 2.2).

A base URL that file names are appended to (`provisioning.url`, `stage_url`) may hold
no query (`?`) or fragment (`#`): the name would land inside it; nor a macro in its path
(`http://h/prov/$PN`): files are published flat in each root, so a directory that varies
by device is one no root has.

Fails:   `provisioning: {url: "http://prov.example.com:99999"}` (port out of range),
         `provisioning: {url: "http://prov.example.com/?site=1"}`,
         `provisioning: {url: "http://prov.example.com/prov/$PN"}`
Passes:  `provisioning: {url: "http://prov.example.com:8080"}`
"""

from __future__ import annotations

from collections.abc import Iterator

from gitprov.errors import Problem
from gitprov.inventory import DEFAULT_FILE_NAME, FLEET
from gitprov.rule_url import RuleSyntaxError, joined, parse_rule, redact_text
from gitprov.rules import DocContext, RuleContext, error_at, get
from gitprov.rules._bindings import bound_values, firmware_rules
from gitprov.yamldoc import Document, Path_

CODE = "GP110"
NAME = "bad-rule-url"


def profile_rule_of(fleet: Document) -> str | None:
    """The Profile Rule gitprov writes for the fleet's `provisioning.url` (macros kept)."""
    url = get(fleet.data, "provisioning", "url")
    if not isinstance(url, str):
        return None
    template = get(fleet.data, "file_name")
    if not isinstance(template, str):
        template = DEFAULT_FILE_NAME
    return joined(url, template)


def url_params(dctx: DocContext) -> Iterator[tuple[Path_, str, str]]:
    """(path, value, label) of every URL-typed parameter value of the document."""
    for name, value in dctx.params():
        typed = dctx.catalog.lookup(name) or dctx.catalog.unpublished_named(name)
        if typed is None or typed.type != "url" or not isinstance(value, str):
            continue
        if not value:
            continue  # empty: the device's default ("Empty" in the overview)
        yield ("params", name), value, typed.label or name


def _parsed(value: str) -> None:
    """parse_rule(value), and a scheme in lower case: the device's (see RuleUrl)."""
    url = parse_rule(value)
    if url.scheme_case_at >= 0:
        raise RuleSyntaxError(
            url.scheme_case_at, f"write the scheme in lower case: {url.scheme}://"
        )


def _problem(doc: Document, path: Path_, what: str, exc: RuleSyntaxError) -> Problem:
    return error_at(
        doc,
        path,
        CODE,
        f"{what}: {exc.message} (at character {exc.offset + 1})",
        "write [--key KEY]scheme://server[:port]/path with scheme tftp, http or https",
    )


def _base_url_problems(doc: Document) -> Iterator[tuple[str, Problem]]:
    """A query or a fragment in a URL that file names are appended to: the file name
    would land inside it (`http://h/?x=1/fv….conf` asks for `/`), and every device would
    fetch another path than the one its file is published at; or a macro in its path,
    a directory per device that no root has."""
    for key in ("url", "stage_url"):
        url = get(doc.data, "provisioning", key)
        if not isinstance(url, str):
            continue
        at = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
        if at >= 0:
            what = "a query ('?')" if url[at] == "?" else "a fragment ('#')"
            why = (
                f"holds {what} (at character {at + 1}): gitprov appends each file's name to "
                "this URL, which would put the name inside it"
            )
            hint = "write the base URL alone, scheme://server[:port][/directory]"
        elif (at := _path_macro(url)) >= 0:
            why = (
                f"has a macro in its path (at character {at + 1}): each device would ask "
                "for a directory of its own, and gitprov publishes every file in each root "
                "itself"
            )
            hint = (
                "keep the directory fixed (a server maps it to the root: `gitprov serve "
                "--url-path`, nginx `alias`) and put the macro in file_name, e.g. "
                'file_name: "fv$(PN)-$(MA).conf"'
            )
        else:
            continue
        message = f"provisioning.{key}: {redact_text(url)!r} {why}"
        yield key, error_at(doc, ("provisioning", key), CODE, message, hint)


def _path_macro(url: str) -> int:
    """Where a `$` is in the path of `url` (vendor overview 2.2 expands macros in the
    whole URL: `http://h/prov/$PN`), or -1."""
    start = url.find("://")
    start = start + 3 if start >= 0 else 0
    slash = url.find("/", start)
    return url.find("$", slash) if slash >= 0 else -1


def check_document(dctx: DocContext) -> Iterator[Problem]:
    doc = dctx.doc
    if dctx.kind == FLEET and not dctx.is_flagged(("provisioning", "url")):
        found = dict(_base_url_problems(doc))
        yield from found.values()
        rule = profile_rule_of(doc)
        if rule is not None and "url" not in found:
            try:
                parse_rule(rule)
            except RuleSyntaxError as exc:
                what = f"provisioning.url (as the Profile Rule {redact_text(rule)!r})"
                yield _problem(doc, ("provisioning", "url"), what, exc)
    for path, value, label in url_params(dctx):
        if dctx.is_flagged(path):
            continue
        try:
            _parsed(value)
        except RuleSyntaxError as exc:
            yield _problem(doc, path, label, exc)


def check(ctx: RuleContext) -> Iterator[Problem]:
    for found in bound_values(ctx, NAME):
        url = next((e for e in found.entries if e.type == "url"), None)
        if url is None or not isinstance(found.value, str) or not found.value:
            continue
        if ctx.is_flagged(found.doc, found.path):
            continue
        try:
            _parsed(found.value)
        except RuleSyntaxError as exc:
            yield _problem(found.doc, found.path, f"{found.key} ({url.label})", exc)
    for fw in firmware_rules(ctx):
        # A default rule is provisioning.url's, checked at provisioning.url above.
        if not fw.given or ctx.is_flagged(fw.doc, fw.path):
            continue
        try:
            _parsed(fw.rule)
        except RuleSyntaxError as exc:
            yield _problem(fw.doc, fw.path, "firmware.rule (the Upgrade Rule)", exc)
