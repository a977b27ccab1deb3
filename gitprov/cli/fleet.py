"""`gitprov fleet`: which device fetched which version, from the servers' logs.

Renders `gitprov.fleet.FleetReport` as a text table, as JSON (output format 1,
schemas/output/fleet-output.schema.json) and as a static HTML report for auditors: one
self-contained file (inline CSS and SVG, no script, a Content-Security-Policy that allows
none), in which every string that came from a log is escaped.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitprov import DOCS_URL, paths
from gitprov.cli.common import (
    Output,
    Subparsers,
    add_command,
    add_format,
    add_state_dir,
    publisher_config_of,
    session,
)
from gitprov.cli.defaults import LOG_FORMATS
from gitprov.errors import UsageError

if TYPE_CHECKING:
    from gitprov.fleet import Adoption, FleetReport, LogSource, Seen

OUTPUT_VERSION = 1


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "fleet",
        run_fleet,
        help="which device fetched which version: current, stale, never",
        description="Read the publisher's manifest and the servers' logs and show, per "
        "published device: the version published, the version it last fetched, when and "
        "how it was last seen, and its state (current: it fetched the published version; "
        "stale: it fetched, but not that version; never: no fetch of its file in the "
        "logs); and the clients asking for per-MAC files of MACs that are not published "
        "(scans). Logs: the fetch log of `gitprov serve`, nginx access logs (combined "
        "format), tftpd-hpa syslog lines (in.tftpd run with -vv); gzip-compressed or not "
        f"({DOCS_URL}/fleet-status.md, 'gitprov fleet').",
        examples=(
            (
                "gitprov fleet",
                "each device's published and last fetched version, from STATE_DIR/fetch.log",
            ),
            (
                "gitprov fleet --log nginx:/var/log/nginx/access.log --html fleet.html",
                "from nginx's log; also an HTML report",
            ),
        ),
    )
    add_state_dir(p)
    p.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="[FORMAT:]PATH",
        type=_log_source,
        help=f"a log to read (repeat for several; .gz too). FORMAT, one of "
        f"{', '.join(LOG_FORMATS)}, is told from the first line when not given. Default: "
        "STATE_DIR/fetch.log",
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write a static HTML report (table and version adoption chart) to FILE",
    )
    p.add_argument(
        "--bucket",
        choices=["hour", "day"],
        help="the adoption chart's step (default: hours for up to three days of fetches, "
        "else days)",
    )
    add_format(p)


def _log_source(text: str) -> LogSource:
    from gitprov.fleet import parse_log_source

    if not text:
        raise argparse.ArgumentTypeError("give a log file")
    return parse_log_source(text)


def run_fleet(args: argparse.Namespace, out: Output) -> int:
    from gitprov.fleet import LogSource, fleet_status
    from gitprov.publish import write_atomic

    state_dir = publisher_config_of(args).state_dir
    if not state_dir:
        s = session(args, out)
        fleet = s.fleet_settings()
        state_dir = s.fleet_path(fleet.state_dir) if fleet else None
        if not state_dir:
            raise UsageError(
                "no state dir: the fleet settings name no publish.state_dir",
                hint="give --state-dir, the publisher's state dir",
            )
    state = Path(state_dir)
    if not paths.is_dir(state, "the state dir"):
        raise UsageError(
            f"the state dir {state_dir} is not a directory",
            hint="give the state dir the publisher writes its manifest to",
        )
    logs: list[LogSource] = list(args.log)
    if not logs:
        default = state / "fetch.log"
        if not default.exists():
            raise UsageError(
                f"no log given, and {default} does not exist",
                hint="give --log PATH (a fetch log of `gitprov serve`, an nginx access log "
                "or tftpd-hpa's syslog lines)",
            )
        logs = [LogSource(default, "gitprov")]
    if args.html and not Path(args.html).absolute().parent.is_dir():
        # (before the logs are read; and a typo makes no directories)
        raise UsageError(
            f"--html {args.html}: the directory {Path(args.html).absolute().parent} does not exist",
            hint="give a file in an existing directory",
        )
    if args.html:
        _check_html_target(args.html)
        from gitprov.plan import MANIFEST

        _check_not_read(args.html, [log.path for log in logs] + [state / MANIFEST])
    with out.working("fleet"):
        report = fleet_status(state, logs, bucket=args.bucket, progress=out.progress())
    if args.format == "json":
        out.json(report_json(report))
    else:
        render_text(report, out)
    if args.html:
        try:
            write_atomic(Path(args.html), render_html(report).encode("utf-8"))
        except OSError as exc:
            raise UsageError(
                f"--html {args.html}: cannot write it: {exc.strerror}",
                hint="give a file in a writable directory",
            ) from None
        if args.format != "json":  # stdout is the JSON document then
            out.info(f"HTML report: {args.html}")
    for bad in report.malformed:
        out.warn(f"{_safe(bad.where)}: malformed line skipped: {bad.reason}: {bad.text}")
    if report.malformed_total:
        more = report.malformed_total - len(report.malformed)
        out.warn(
            f"{report.malformed_total} malformed line(s) skipped"
            + (f" ({more} not listed)" if more > 0 else "")
        )
        out.warn(
            f"    hint: check each log's format ({DOCS_URL}/fleet-status.md, 'gitprov fleet'), "
            "or name it: --log nginx:PATH"
        )
    return 0


def _check_html_target(name: str) -> None:
    """The report is renamed over FILE: what is there must be a file it may replace.
    A device would be replaced by a file (as root: /dev/null), and so would a symbolic
    link, whatever it points to (/dev/stdout); a directory would fail only after the
    logs were read."""
    paths.absolute(name, "--html")
    try:
        mode = os.lstat(name).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        found = paths.unusable(name, exc, "--html")
        if found is None:
            raise UsageError(
                f"--html {name}: cannot look at it: {exc.strerror}", hint="check the path"
            ) from None
        raise found from None
    if stat.S_ISLNK(mode):
        raise UsageError(
            f"--html {name}: a symbolic link: the report would replace the link",
            hint="give the file it points to, or a new file",
        )
    if not stat.S_ISREG(mode):
        raise UsageError(
            f"--html {name}: not a regular file",
            hint="give a new file, or a file the report may replace",
        )


def _check_not_read(name: str, read: list[Path]) -> None:
    """The report must not replace what it is made from: `--log fetch.log --html
    fetch.log` read the log, then renamed the report over it, and the log was gone."""
    try:
        st = os.stat(name)
    except OSError:
        return  # (a new file: nothing read is there)
    for path in read:
        with contextlib.suppress(OSError):
            if os.path.samestat(st, os.stat(path)):
                raise UsageError(
                    f"--html {name}: it is {path}, which the report is made from: the "
                    "report would replace it",
                    hint="give the report a file of its own",
                )


# --- text --------------------------------------------------------------------------------


def _safe(text: str) -> str:
    """Log text for a terminal: controls (escape sequences among them) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _seen_text(seen: Seen | None) -> str:
    if seen is None:
        return "-"
    return f"{seen.at} {seen.protocol} {_safe(seen.client)}"


def render_text(report: FleetReport, out: Output) -> None:
    out.info(
        f"published: {report.commit[:12]} at {report.published_at} (state dir {report.state_dir})"
    )
    out.data(f"{'MAC':<14}{'MODEL':<10}{'PUBLISHED':>10} {'FETCHED':>9}  {'STATE':<8} LAST SEEN")
    for d in report.devices:
        fetched = "-" if d.fetched is None else (str(d.fetched_version or "older"))
        out.data(
            f"{d.mac:<14}{_safe(d.model)[:9]:<10}{d.published_version:>10} {fetched:>9}  "
            f"{d.state:<8} {_seen_text(d.last_seen)}"
        )
    out.info(
        f"{len(report.devices)} device(s): {report.count('current')} current, "
        f"{report.count('stale')} stale, {report.count('never')} never"
    )
    if report.scans:
        out.info("")
        out.info("per-MAC names of unpublished MACs asked for (scans), by client:")
        out.data(f"{'CLIENT':<40}{'REQUESTS':>9}{'MACS':>7}  FIRST / LAST  EXAMPLE")
        for s in report.scans:
            macs = f"{s.macs}{'+' if s.macs_capped else ''}"
            example = _safe(s.examples[0])[:60] if s.examples else ""
            out.data(
                f"{_safe(s.client)[:39]:<40}{s.requests:>9}{macs:>7}  {s.first} / {s.last}  "
                f"{example}"
            )
        if report.scan_clients_dropped:
            out.info(f"... and {report.scan_clients_dropped} more client(s), not listed")
    for log in report.logs:
        out.info(
            f"log {_safe(log.path)} ({log.format or 'not recognised'}): {log.lines} line(s), "
            f"{log.requests} request(s), {log.malformed} malformed"
        )


# --- JSON --------------------------------------------------------------------------------


def _seen_json(seen: Seen | None) -> dict[str, Any] | None:
    if seen is None:
        return None
    return {
        "time": seen.at,
        "protocol": seen.protocol,
        "client": seen.client,
        "path": seen.path,
        "status": seen.status,
        "log": seen.log,
    }


def report_json(report: FleetReport) -> dict[str, Any]:
    """`gitprov fleet --format json`, output format 1 (docs/fleet-status.md; its JSON
    Schema is schemas/output/fleet-output.schema.json). Fields are only ever added within
    a version."""
    return {
        "version": OUTPUT_VERSION,
        "state_dir": report.state_dir,
        "commit": report.commit,
        "published_at": report.published_at,
        "generated_at": report.generated_at,
        "summary": {
            "devices": len(report.devices),
            "current": report.count("current"),
            "stale": report.count("stale"),
            "never": report.count("never"),
        },
        "devices": [
            {
                "mac": d.mac,
                "model": d.model,
                "file": d.file,
                "published_version": d.published_version,
                "state": d.state,
                "fetched_version": d.fetched_version,
                "version_from": d.version_from,
                "fetched": _seen_json(d.fetched),
                "last_seen": _seen_json(d.last_seen),
            }
            for d in report.devices
        ],
        "unknown_macs": {
            "clients": [
                {
                    "client": s.client,
                    "requests": s.requests,
                    "macs": s.macs,
                    "macs_capped": s.macs_capped,
                    "first": s.first,
                    "last": s.last,
                    "examples": list(s.examples),
                }
                for s in report.scans
            ],
            "clients_not_listed": report.scan_clients_dropped,
        },
        "adoption": {
            "bucket": report.adoption.bucket,
            "times": list(report.adoption.times),
            "series": list(report.adoption.series),
            "counts": [list(row) for row in report.adoption.counts],
        },
        "logs": [
            {
                "path": log.path,
                "format": log.format,
                "lines": log.lines,
                "requests": log.requests,
                "malformed": log.malformed,
                "skipped": log.skipped,
            }
            for log in report.logs
        ],
        "malformed": {
            "total": report.malformed_total,
            "listed": [
                {"where": m.where, "reason": m.reason, "text": m.text} for m in report.malformed
            ],
        },
    }


# --- HTML --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.num{text-align:right}
tr.current td.state{background:#dff5df}
tr.stale td.state{background:#fde9c8}
tr.never td.state{background:#f6d4d4}
code,td.mono{font-family:ui-monospace,monospace;word-break:break-all}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
"""
_PALETTE = (
    "#999999",
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unsurrogate(m: re.Match[str]) -> str:
    # A byte of a log line that was not UTF-8 is held as a lone surrogate (read with
    # surrogateescape): shown as its `\xNN`. Any other one came from a JSON escape
    # (`"\ud800"` in a fetch log line) and is shown as that escape.
    code = ord(m.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def _e(value: object) -> str:
    # No UTF-8 page can hold a lone surrogate: each is written as an escape.
    text = _SURROGATE.sub(_unsurrogate, str(value))
    return html.escape(text, quote=True)


def _color(series: tuple[str, ...], i: int) -> str:
    # "older" is always grey; versions take the other colours in order.
    if series[i] == "older":
        return _PALETTE[0]
    offset = 1 if series and series[0] == "older" else 0
    return _PALETTE[1 + (i - offset) % (len(_PALETTE) - 1)]


def adoption_svg(adoption: Adoption) -> str:
    """Stacked bars: devices per version at the end of each bucket."""
    width, height, left, bottom, top = 820, 300, 50, 40, 10
    if not adoption.times:
        return (
            f'<svg id="adoption" xmlns="http://www.w3.org/2000/svg" width="{width}" height="60"'
            ' role="img" aria-label="no fetches in the logs"><text x="10" y="30">'
            "No successful fetch in the logs.</text></svg>"
        )
    n = len(adoption.times)
    peak = max(max(sum(row), 1) for row in adoption.counts)
    plot_w, plot_h = width - left - 10, height - bottom - top
    bar = plot_w / n
    parts = [
        f'<svg id="adoption" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="devices per version, by {_e(adoption.bucket)}">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for i, (when, row) in enumerate(zip(adoption.times, adoption.counts, strict=True)):
        x = left + i * bar
        y = float(top + plot_h)
        for j, count in enumerate(row):
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            parts.append(
                f'<rect class="bar" x="{x + bar * 0.1:.2f}" y="{y:.2f}" '
                f'width="{max(bar * 0.8, 0.5):.2f}" height="{h:.2f}" '
                f'fill="{_color(adoption.series, j)}"><title>{_e(when)}: {count} device(s) on '
                f"{_e(adoption.series[j])}</title></rect>"
            )
    ticks = sorted({0, n - 1, *range(0, n, max(1, n // 6))})
    for i in ticks:
        x = left + (i + 0.5) * bar
        label = adoption.times[i][: 13 if adoption.bucket == "hour" else 10]
        parts.append(
            f'<text x="{x:.2f}" y="{height - bottom + 16}" text-anchor="middle" '
            f'font-size="10">{_e(label)}</text>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{_color(adoption.series, j)}"></i>{_e(name)}</span>'
        for j, name in enumerate(adoption.series)
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def _seen_cells(seen: Seen | None) -> str:
    if seen is None:
        return "<td>-</td><td>-</td><td>-</td>"
    return (
        f'<td>{_e(seen.at)}</td><td>{_e(seen.protocol)}</td><td class="mono">{_e(seen.client)}</td>'
    )


def render_html(report: FleetReport) -> str:
    from gitprov.fleet import MALFORMED_KEPT

    rows = []
    for d in report.devices:
        fetched = "-" if d.fetched is None else (str(d.fetched_version or "older"))
        rows.append(
            f'<tr class="{_e(d.state)}" data-mac="{_e(d.mac)}"><td class="mono">{_e(d.mac)}</td>'
            f'<td>{_e(d.model)}</td><td class="num">{_e(d.published_version)}</td>'
            f'<td class="num">{_e(fetched)}</td><td class="state">{_e(d.state)}</td>'
            f"{_seen_cells(d.last_seen)}"
            f'<td class="mono">{_e(d.last_seen.path if d.last_seen else "-")}</td></tr>'
        )
    scans = []
    for s in report.scans:
        scans.append(
            f'<tr><td class="mono">{_e(s.client)}</td><td class="num">{s.requests}</td>'
            f'<td class="num">{s.macs}{"+" if s.macs_capped else ""}</td>'
            f"<td>{_e(s.first)}</td><td>{_e(s.last)}</td>"
            f'<td class="mono">{"<br>".join(_e(x) for x in s.examples)}</td></tr>'
        )
    logs = [
        f'<tr><td class="mono">{_e(log.path)}</td><td>{_e(log.format or "not recognised")}</td>'
        f'<td class="num">{log.lines}</td><td class="num">{log.requests}</td>'
        f'<td class="num">{log.malformed}</td></tr>'
        for log in report.logs
    ]
    bad = [
        f"<li><code>{_e(m.where)}</code>: {_e(m.reason)} <code>{_e(m.text)}</code></li>"
        for m in report.malformed
    ]
    summary = (
        f"{len(report.devices)} device(s): {report.count('current')} current, "
        f"{report.count('stale')} stale, {report.count('never')} never"
    )
    title = f"gitprov fleet status: {report.commit[:12]}"
    scan_table = (
        '<table id="scans"><thead><tr><th>client</th><th>requests</th><th>MACs</th>'
        "<th>first</th><th>last</th><th>examples</th></tr></thead><tbody>"
        + "".join(scans)
        + "</tbody></table>"
        if scans
        else "<p>None.</p>"
    )
    dropped = (
        f"<p>... and {report.scan_clients_dropped} more client(s), not listed.</p>"
        if report.scan_clients_dropped
        else ""
    )
    malformed = (
        f"<h2>Malformed lines ({report.malformed_total}, skipped)</h2><ul>{''.join(bad)}</ul>"
        + (
            f"<p>Only the first {MALFORMED_KEPT} are listed.</p>"
            if report.malformed_total > len(report.malformed)
            else ""
        )
        if report.malformed_total
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        # No script may run, whatever a log held: the report is only markup and styles.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Fleet status</h1>"
        f"<p>Published commit <code>{_e(report.commit)}</code> at {_e(report.published_at)}; "
        f"state dir <code>{_e(report.state_dir)}</code>; report made {_e(report.generated_at)}."
        f'</p><p id="summary">{_e(summary)}</p>'
        f"<h2>Version adoption (devices per version, by {_e(report.adoption.bucket)})</h2>"
        f"{adoption_svg(report.adoption)}"
        '<h2>Devices</h2><table id="devices"><thead><tr><th>MAC</th><th>model</th>'
        "<th>published</th><th>fetched</th><th>state</th><th>last seen</th>"
        "<th>protocol</th><th>client</th><th>path</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + f"<h2>Unknown MACs asked for</h2>{scan_table}{dropped}"
        + '<h2>Logs read</h2><table id="logs"><thead><tr><th>log</th><th>format</th>'
        "<th>lines</th><th>requests</th><th>malformed</th></tr></thead><tbody>"
        + "".join(logs)
        + f"</tbody></table>{malformed}</body></html>\n"
    )
