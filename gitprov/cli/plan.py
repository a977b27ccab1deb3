"""`gitprov plan`: what merging a change would do to each device, for a pull request.

The markdown is a pull-request comment, so it has to stay readable and small when one
profile edit reaches thousands of devices: devices whose changed lines are the same form
one group, shown with one diff; device lists are collapsed; and `--max-chars` caps the
whole text (GitHub refuses a comment over 65,536 characters), dropping device rows first
and whole groups last, with a line that says what was left out.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, NamedTuple

from gitprov.cli.common import Output, Subparsers, add_command, readable_file, session
from gitprov.errors import UsageError
from gitprov.smallfile import read_small
from gitprov.unsafe import NOT_UTF8, UNSAFE, describe, echoed

if TYPE_CHECKING:
    from gitprov.review import Change, DeviceChange, Review

MIN_CHARS = 1_000
DIFF_LINES = 150  # per group: a device's whole file is rarely longer
KEYS_SHOWN = 4


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "plan",
        run,
        help="what merging a change would do to each device",
        description="Render both sides with secrets redacted and show, per device, the "
        "diff of its file and its version bump. No private key needed. For pull "
        "requests: gitprov plan --base origin/main --format markdown (devices with the "
        "same changed lines are grouped under one diff).",
        examples=(
            (
                "gitprov plan --base main",
                "what merging HEAD into main does: each device's diff and version",
            ),
            (
                "gitprov plan --base main --rev feature/voicemail --format markdown",
                "a branch's plan as a pull-request comment",
            ),
        ),
    )
    p.add_argument("--base", default="main", help="the branch the change goes into")
    p.add_argument("--rev", default="HEAD", help="the change")
    p.add_argument(
        "--format",
        choices=["text", "json", "markdown"],
        default="text",
        help="text; json (its schema: `gitprov schema plan-output`); markdown (a PR comment)",
    )
    p.add_argument(
        "--max-chars",
        type=_max_chars,
        metavar="N",
        help=f"markdown only: cap the text at N characters (at least {MIN_CHARS:,}), "
        "listing fewer devices and then fewer groups; a pull-request comment takes at "
        "most 65,536 (default: no cap)",
    )
    p.add_argument(
        "--from-json",
        type=readable_file,
        metavar="FILE",
        help="render a plan saved with --format json instead of computing one (no "
        "repository needed; --base and --rev are not used); '-' reads stdin",
    )


def _max_chars(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {echoed(text)}") from None
    if n < MIN_CHARS:
        raise argparse.ArgumentTypeError(f"{n} is too small: give at least {MIN_CHARS}")
    return n


def run(args: argparse.Namespace, out: Output) -> int:
    if args.max_chars is not None and args.format != "markdown":
        raise UsageError(
            f"--max-chars caps markdown, not --format {args.format}",
            hint="add --format markdown, or drop --max-chars",
        )
    if args.from_json:
        result = load_json(args.from_json)
    else:
        with out.working("plan"):
            result = session(args, out).plan(args.base, args.rev)
    if args.format == "json":
        out.json(to_json(result))
    elif args.format == "markdown":
        out.stdout.write(markdown(result, args.max_chars))
    else:
        _text(result, out)
    return 0


# -- json -----------------------------------------------------------------------------
def to_json(result: Review) -> dict[str, Any]:
    return {
        "version": 1,
        "base": result.base,
        "head": result.head,
        "unchanged": result.unchanged,
        "devices": [
            {
                "mac": c.mac,
                "change": str(c.change),
                "file": c.file_name,
                "old_version": c.old_version,
                "new_version": c.new_version,
                "diff": list(c.diff),
            }
            for c in result.changes
        ],
        "removal": _removal_json(result),
        "target_changes": [
            {"setting": c.setting, "old": c.old, "new": c.new} for c in result.target_changes
        ],
        "stranding": [{"setting": c.setting, "old": c.old, "new": c.new} for c in result.stranding],
        "upgrades": [
            {
                "model": u.model,
                "version": u.version,
                "selected": u.selected,
                "devices": u.devices,
                "selected_before": u.selected_before,
                "same_rule_as": u.same_rule_as or None,
            }
            for u in result.upgrades
        ],
        "renumbered": [
            {
                "mac": r.mac,
                "file": r.file_name,
                "old_version": r.old_version,
                "new_version": r.new_version,
            }
            for r in result.renumbered
        ],
    }


def _removal_json(result: Review) -> dict[str, Any] | None:
    share = result.removal_share
    if share is None or result.max_removal is None or result.devices_before is None:
        return None
    return {
        "devices": result.removed,
        "of": result.devices_before,
        "percent": round(float(share * 100), 2),
        "max_percent": float(result.max_removal * 100),
        "refused": result.mass_removal,
    }


def _unsafe_text(doc: Any) -> tuple[str, str] | None:
    """The place and character of the first string of a saved plan that holds what no
    plan gitprov writes does: a control character (TAB aside: it separates the lines'
    values in a diff), an invisible one, or a lone surrogate (`\\ud800`, which no
    output can encode). Rendered, ESC rewrites the reader's terminal
    and a bidi override reorders what a reviewer reads."""
    stack: list[tuple[str, Any]] = [("(top)", doc)]
    while stack:
        where, node = stack.pop()
        # (pushed in reverse: the first such string of the file is the one named)
        if isinstance(node, dict):
            items = list(node.items())
            stack.extend((f"{where}/{k}".removeprefix("(top)/"), v) for k, v in reversed(items))
        elif isinstance(node, list):
            listed = [(f"{where}/{i}".removeprefix("(top)/"), v) for i, v in enumerate(node)]
            stack.extend(reversed(listed))
        elif isinstance(node, str):
            found = UNSAFE.search(node) or NOT_UTF8.search(node)
            if found is not None:
                return where, found.group()
    return None


def _mapping(twice: list[bool], pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, noting in `twice` when it names a key twice (the parse
    stays the fast one: where that key is, `_duplicate_key` finds only then)."""
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        twice.append(True)
    return mapping


# A token of JSON text that parsed: a string, a punctuation mark, or a bare scalar.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:"]+')


def _duplicate_key(text: str) -> tuple[int, int, str, str]:
    """The line and column of the first key of valid JSON `text` that its object named
    before, the key, and where it was first (`line:col`, counted as Python's JSON errors
    count them)."""
    objects: list[dict[str, int] | None] = []  # per open bracket: keys seen, None in a list
    expect_key = False
    for token in _TOKEN.finditer(text):
        mark = token.group()
        if mark == "{":
            objects.append({})
            expect_key = True
        elif mark == "[":
            objects.append(None)
        elif mark in "]}":
            objects.pop()
        elif mark == ",":
            expect_key = bool(objects) and objects[-1] is not None
        elif expect_key:
            seen, key = objects[-1], json.loads(mark)
            assert seen is not None
            if key in seen:
                line, col = _line_col(text, token.start())
                first = _line_col(text, seen[key])
                return line, col, key, f"{first[0]}:{first[1]}"
            seen[key] = token.start()
            expect_key = False
    raise AssertionError("no key named twice")


def _line_col(text: str, at: int) -> tuple[int, int]:
    return text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)


# A saved plan past this is no plan gitprov wrote (one of 100,000 devices, each changed,
# is some 40 MB).
PLAN_JSON_MAX = 256 * 2**20


def load_json(path: str) -> Review:
    """A plan saved with `--format json`, checked against its schema."""
    from jsonschema import Draft202012Validator

    from gitprov.firmware import RolloutCount
    from gitprov.review import Change, DeviceChange, Renumbered, Review, TargetChange
    from gitprov.schemas import output_schemas
    from gitprov.strand import Stranding

    try:
        if path == "-":
            with open("/dev/stdin", "rb") as stdin:
                data = stdin.read(PLAN_JSON_MAX + 1)
        else:
            # (a fifo nothing writes to waited for ever; /dev/zero was read until memory
            # ran out, an internal error)
            data = read_small(path, PLAN_JSON_MAX)
        if len(data) > PLAN_JSON_MAX:
            raise ValueError(f"larger than {PLAN_JSON_MAX // 2**20} MiB")
        text = data.decode("utf-8")
        # (a byte order mark at the start is skipped, as the inventory's YAML and the
        # state files' JSON have it: an editor on Windows adds one when it saves)
        text = text.removeprefix("\ufeff")
        twice: list[bool] = []
        doc = json.loads(text, object_pairs_hook=functools.partial(_mapping, twice))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise UsageError(
            f"{path}: not a saved plan ({why})",
            hint="save one with `gitprov plan --format json > FILE`",
        ) from None
    if twice:
        line, col, key, first = _duplicate_key(text)
        raise UsageError(
            f"{path}:{line}:{col}: duplicate key {echoed(key)} (first at {first})",
            hint="render the plan gitprov wrote: it writes each key once (this one was "
            "edited, or written by another tool, and which of the two values counts is a "
            "guess)",
        )
    schema = output_schemas()["plan-output.schema.json"]
    error = next(iter(Draft202012Validator(schema).iter_errors(doc)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise UsageError(
            f"{path}: {where}: {error.message}",
            hint="give the output of `gitprov plan --format json` (format version 1)",
        )
    unsafe = _unsafe_text(doc)
    if unsafe is not None:
        where, char = unsafe
        raise UsageError(
            f"{path}: {where}: holds {describe(char)}, which gitprov never writes into a plan",
            hint="render the plan gitprov wrote: this one was edited (a crafted plan could "
            "rewrite the terminal or hide text in a review)",
        )
    changes = tuple(
        DeviceChange(
            d["mac"],
            Change(d["change"]),
            d["file"],
            d["old_version"],
            d["new_version"],
            tuple(d["diff"]),
        )
        for d in doc["devices"]
    )
    removal = doc.get("removal")
    return Review(
        doc["base"],
        doc["head"],
        changes,
        doc["unchanged"],
        devices_before=removal["of"] if removal else None,
        max_removal=Fraction(str(removal["max_percent"])) / 100 if removal else None,
        target_changes=tuple(
            TargetChange(c["setting"], c["old"], c["new"]) for c in doc.get("target_changes", [])
        ),
        upgrades=tuple(
            RolloutCount(
                u["model"],
                u["version"],
                u["selected"],
                u["devices"],
                u["selected_before"],
                same_rule_as=u.get("same_rule_as") or "",
            )
            for u in doc.get("upgrades", [])
        ),
        renumbered=tuple(
            Renumbered(r["mac"], r["file"], r["old_version"], r["new_version"])
            for r in doc.get("renumbered", [])
        ),
        stranding=tuple(
            Stranding(c["setting"], c["old"], c["new"]) for c in doc.get("stranding", [])
        ),
    )


# -- what a publisher would refuse ------------------------------------------------------
def warnings(result: Review) -> list[str]:
    """One line per thing a publisher refuses unless its operator allows it."""
    out = []
    if result.target_changes:
        moved = "; ".join(
            f"{c.setting} {c.old or '(unset)'} -> {c.new or '(unset)'}"
            for c in result.target_changes
        )
        out.append(
            f"this change moves where files are published ({moved}): a publisher refuses "
            "it unless its operator allows the move (--allow-target-change) and the new "
            "paths are inside its allowed roots"
        )
    if result.mass_removal:
        out.append(f"{_removal(result)}: a publisher refuses it without --allow-mass-removal")
    if result.stranding:
        from gitprov.strand import KEEP, who

        out.append(
            f"this change may strand {who(result.stranding)} ({_stranded(result)}): each "
            "fetches by the name and key of its last file; a publisher refuses it unless "
            f"{KEEP} or --allow-stranding is given"
        )
    return out


def _stranded(result: Review) -> str:
    return "; ".join(c.describe() for c in result.stranding)


def _removal(result: Review) -> str:
    from gitprov.publish import percent

    share, limit = result.removal_share, result.max_removal
    assert share is not None and limit is not None
    return (
        f"removes {result.removed} of the {result.devices_before} devices ({percent(share)}), "
        f"more than publish.max_removal allows ({percent(limit)})"
    )


def upgrade_lines(result: Review, *, markdown: bool = False) -> list[str]:
    """One line per model whose firmware tells devices to upgrade. In `markdown`, the
    version and the model are code: `firmware.version` is any text of the change, and
    outside code `<!--` would hide the rest of the comment from its reviewers."""
    first, show = ("Firmware", _code) if markdown else ("firmware", str)
    lines = []
    for u in result.upgrades:
        line = (
            f"{first} {show(u.version)} of {show(u.model)}: {u.selected:,} of its {u.devices:,} "
            f"device(s) are told to upgrade (before: {u.selected_before:,})"
        )
        if u.same_rule_as:
            line += (
                f"; {'**but**' if markdown else 'WARNING:'} by the Upgrade Rule that "
                f"{show(u.same_rule_as)} was told by, and a device never fetches an Upgrade "
                "Rule URL again that it fetched: those that took "
                f"{show(u.same_rule_as)} will not upgrade (name the image after its version, "
                "or change firmware.rule)"
            )
        lines.append(line)
    return lines


# -- text -----------------------------------------------------------------------------
def _text(result: Review, out: Output) -> None:
    from gitprov.publish import percent

    out.data(f"gitprov plan {result.base[:12]}..{result.head[:12]}")
    for line in warnings(result):
        out.data(f"WARNING: {line}")
    for line in upgrade_lines(result):
        out.data(line)
    if result.removed and not result.mass_removal and result.removal_share is not None:
        out.data(
            f"removes {result.removed} of the {result.devices_before} devices "
            f"({percent(result.removal_share)})"
        )
    for line in renumbered_lines(result):
        out.data(line)
    if not result.changes:
        out.data(f"no device changes ({result.unchanged} unchanged)")
        return
    for c in result.changes:
        out.data(f"  {c.change:<7} {c.mac}  {c.file_name}  version {_versions([c])}")
    out.data(
        f"\n{len(result.changes)} device(s) change, {result.unchanged} unchanged; new "
        "versions as merging it into the base gives them (a fast-forward gives the same)"
    )
    for c in result.changes:
        out.data()
        out.data("\n".join(c.diff))


def renumbered_lines(result: Review, shown: int = 10) -> list[str]:
    """The devices that keep their settings but get another version (their history on
    the branch changed them and changed them back): a publish serves them a new number,
    so they fetch the same settings again."""
    if not result.renumbered:
        return []
    listed = ", ".join(
        f"{r.mac} {r.old_version} → {r.new_version}" for r in result.renumbered[:shown]
    )
    more = len(result.renumbered) - shown
    return [
        f"{len(result.renumbered)} unchanged device(s) get a new version all the same, so "
        f"they fetch their file again: {listed}" + (f" and {more} more" if more > 0 else "")
    ]


# -- markdown -------------------------------------------------------------------------
class Group(NamedTuple):
    """Devices whose files change by the same lines (context lines may differ)."""

    change: Change
    lines: tuple[str, ...]  # the +/- lines, without the file headers
    devices: tuple[DeviceChange, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """The DBID keys the changed lines set, in order of appearance."""
        seen: dict[str, None] = {}
        for line in self.lines:
            seen.setdefault(line[1:].partition("=")[0], None)
        return tuple(seen)


def groups(changes: Sequence[DeviceChange]) -> list[Group]:
    """Largest group first, so the change that reaches most devices is read first."""
    found: dict[tuple[Change, tuple[str, ...]], list[DeviceChange]] = {}
    for c in changes:
        lines = tuple(
            ln for ln in c.diff if ln[:1] in ("+", "-") and not ln.startswith(("+++", "---"))
        )
        found.setdefault((c.change, lines), []).append(c)
    out = [Group(change, lines, tuple(devs)) for (change, lines), devs in found.items()]
    out.sort(key=lambda g: (-len(g.devices), g.devices[0].mac))
    return out


# Keyed by the values of gitprov.review.Change (a StrEnum): its members find them.
_VERB = {"add": "added", "change": "changed", "remove": "removed"}


def markdown(result: Review, max_chars: int | None = None) -> str:
    """The plan as a pull-request comment: a summary, then per group its diff and its
    devices. With `max_chars`, the text (newlines included) is at most that long."""
    all_groups = groups(result.changes)
    head = _md_header(result, len(all_groups))
    # Room for the line that counts left-out groups, at its longest.
    reserve = (
        0 if max_chars is None else len(_tail(len(result.changes), len(all_groups), max_chars))
    )
    tops: list[str] = []
    used = len(head)  # the header and the tops of the groups in
    floor = used  # and their device lists, empty
    for g in all_groups:
        top = _md_group_top(g)
        # A group goes in with its diff and an empty device list, or not at all.
        cost = len(top) + len(_md_rows(g, 0))
        if max_chars is not None and floor + cost + reserve > max_chars:
            break
        tops.append(top)
        used += len(top)
        floor += cost
    shown = all_groups[: len(tops)]
    # What is left goes to device rows, as many per group as fit (the same number for
    # every group, so a big group cannot crowd out the rows of a small one).
    room = None if max_chars is None else max_chars - used - reserve
    limit = _rows_that_fit(shown, room)
    parts = [head]
    for g, top in zip(shown, tops, strict=True):
        parts.append(top + _md_rows(g, limit))
    hidden = all_groups[len(shown) :]
    if hidden and max_chars is not None:
        parts.append(_tail(sum(len(g.devices) for g in hidden), len(hidden), max_chars))
    text = "".join(parts)
    assert max_chars is None or len(text) <= max_chars, (len(text), max_chars)
    return text


def _tail(devices: int, hidden_groups: int, max_chars: int) -> str:
    return (
        f"\n… {devices:,} more device(s) in {hidden_groups:,} group(s) not shown: the text "
        f"is capped at {max_chars:,} characters. `gitprov plan --format json` lists every "
        "device.\n"
    )


def _md_header(result: Review, n_groups: int) -> str:
    from gitprov.publish import percent
    from gitprov.review import Change

    title = f"### gitprov plan `{result.base[:12]}`..`{result.head[:12]}`\n\n"
    title += _md_warnings(result)
    title += "".join(f"{line}.\n\n" for line in upgrade_lines(result, markdown=True))
    if result.removed and not result.mass_removal and result.removal_share is not None:
        title += (
            f"Removes {result.removed:,} of the {result.devices_before:,} devices "
            f"({percent(result.removal_share)}).\n\n"
        )
    # (five listed: the header must leave room in the smallest --max-chars)
    renumbered = renumbered_lines(result, shown=5)
    title += "".join(f"{line[0].upper()}{line[1:]}.\n\n" for line in renumbered)
    if not result.changes:
        return title + f"No device changes ({result.unchanged:,} unchanged).\n"
    counts = {kind: 0 for kind in Change}
    for c in result.changes:
        counts[c.change] += 1
    detail = ", ".join(f"{counts[k]:,} {_VERB[k]}" for k in Change if counts[k])
    return title + (
        f"**{len(result.changes):,} device(s) change** ({detail}) in {n_groups:,} "
        f"group(s) of identical changes; {result.unchanged:,} unchanged. Versions are what "
        "merging into the base gives them; secrets are redacted.\n"
    )


def _md_warnings(result: Review) -> str:
    """`warnings` for a pull request: GitHub alerts, every value from the change in code."""
    text = ""
    if result.target_changes:
        moved = "; ".join(
            f"{_code(c.setting)} {_code(c.old or '(unset)')} → {_code(c.new or '(unset)')}"
            for c in result.target_changes
        )
        text += (
            f"> [!WARNING]\n> **This change moves where files are published:** {moved}. "
            "A publisher refuses it unless its operator allows the move "
            "(`--allow-target-change`) and the new paths are inside its allowed roots.\n\n"
        )
    if result.mass_removal:
        text += (
            f"> [!WARNING]\n> **This change {_removal(result)}:** a publisher refuses it "
            "without `--allow-mass-removal`.\n\n"
        )
    if result.stranding:
        from gitprov.strand import who

        changed = "; ".join(
            f"{_code(c.setting)} {_code(c.old)} → {_code(c.new)}" for c in result.stranding
        )
        text += (
            f"> [!WARNING]\n> **This change may strand {who(result.stranding)}:** {changed}. "
            "Each device fetches by the name and key of its last file; a publisher refuses "
            "it unless `encryption.previous` keeps what they hold (see keys.md; for a "
            "device's own key, also its `previous_key:`) or `--allow-stranding` is given.\n\n"
        )
    return text


def _code(text: str) -> str:
    return f"`{_cell(text.replace(chr(13), ' '))[:200]}`"


def _md_group_top(g: Group) -> str:
    """A group's heading, versions and diff: what a reviewer must see."""
    from gitprov.review import Change

    n = len(g.devices)
    first = g.devices[0]
    who = f"`{first.mac}`" if n == 1 else f"{n:,} devices"
    keys = ", ".join(f"`{_cell(k)}`" for k in g.keys[:KEYS_SHOWN])
    if len(g.keys) > KEYS_SHOWN:
        keys += f" and {len(g.keys) - KEYS_SHOWN} more"
    what = f": {keys}" if g.change == Change.CHANGE and keys else ""
    text = f"\n#### {who} {_VERB[g.change]}{what}\n\n"
    text += f"Version {_versions(g.devices)}"
    if n == 1:
        text += f", file `{_cell(first.file_name)}`.\n\n"
    else:
        text += f". The diff of `{_cell(first.file_name)}`; every device here gets the same "
        text += "changed lines.\n\n"
    diff = list(first.diff)
    if len(diff) > DIFF_LINES:
        diff = [*diff[:DIFF_LINES], f"… {len(first.diff) - DIFF_LINES} more lines"]
    body = "\n".join(diff)
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    return text + f"{fence}diff\n{body}\n{fence}\n"


def _md_rows(g: Group, limit: int | None) -> str:
    if len(g.devices) == 1:
        return ""
    rows = g.devices if limit is None else g.devices[:limit]
    text = f"\n<details><summary>{len(g.devices):,} devices</summary>\n\n"
    if rows:
        text += "| device | file | version |\n|---|---|---|\n"
        text += "".join(_md_row(c) for c in rows)
    left = len(g.devices) - len(rows)
    if left:
        text += f"\n… and {left:,} more, not listed here (the text is capped).\n"
    return text + "\n</details>\n"


def _md_row(c: DeviceChange) -> str:
    return f"| `{c.mac}` | `{_cell(c.file_name)}` | {_versions([c])} |\n"


def _rows_that_fit(shown: Sequence[Group], room: int | None) -> int | None:
    """The most device rows per group whose tables fit in `room` characters."""
    if room is None:
        return None
    listed = [g for g in shown if len(g.devices) > 1]
    if not listed:
        return None

    def size(limit: int) -> int:
        return sum(len(_md_rows(g, limit)) for g in listed)

    lo, hi = 0, max(len(g.devices) for g in listed)
    if size(hi) <= room:
        return hi
    while lo < hi:  # the largest limit that fits; size(limit) grows with limit
        mid = (lo + hi + 1) // 2
        if size(mid) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _versions(devices: Sequence[DeviceChange]) -> str:
    olds = sorted({d.old_version for d in devices if d.old_version is not None})
    news = sorted({d.new_version for d in devices if d.new_version is not None})

    def span(vs: list[int]) -> str:
        if not vs:
            return "-"
        return str(vs[0]) if len(vs) == 1 else f"{vs[0]}–{vs[-1]}"

    return f"{span(olds)} → {span(news)}"


def _cell(text: str) -> str:
    """Safe inside `code` in a table cell: no backtick ends it, no bar splits the row."""
    return text.replace("`", "'").replace("|", "/").replace("\n", " ")


def _longest_backtick_run(text: str) -> int:
    best = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        best = max(best, run)
    return best
