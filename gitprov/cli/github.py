"""The sticky plan comment of gitprov's GitHub action (action.yml at the repository's
top runs `python -m gitprov.cli.github`); not a gitprov command. Messages are workflow
commands (`::notice::`, `::error::`), which the job log shows as annotations."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from gitprov.cli.common import Formatter
from gitprov.errors import GitprovError
from gitprov.tools.github import BOT, MARKER, comment_body, gh_cli, post_sticky, pull_request_of


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gitprov.cli.github",
        description="Post FILE (markdown) as the pull request's sticky comment: the "
        "comment that starts with the marker is edited, else one is created.",
        formatter_class=Formatter,
    )
    p.add_argument("--event", required=True, metavar="FILE", help="$GITHUB_EVENT_PATH")
    p.add_argument("--repository", required=True, help="$GITHUB_REPOSITORY (owner/name)")
    p.add_argument("--body", required=True, metavar="FILE", help="the markdown to post")
    p.add_argument("--footer", default="", help="a line under the body (markdown)")
    p.add_argument("--marker", default=MARKER, help="the hidden first line that finds it")
    p.add_argument("--author", default=BOT, help="whose comment to edit (the token's user)")
    p.add_argument("--gh", default="gh", help="the GitHub CLI")
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        event = json.loads(Path(args.event).read_text(encoding="utf-8"))
        markdown = Path(args.body).read_text(encoding="utf-8")
    except (OSError, ValueError, RecursionError) as exc:
        out.write(f"::error title=gitprov::cannot read the event or the plan: {exc}\n")
        return 2
    pr = pull_request_of(event if isinstance(event, dict) else {}, args.repository)
    if pr is None:
        out.write("::notice title=gitprov::not a pull request: no plan comment\n")
        return 0
    if pr.from_fork:
        out.write(
            "::notice title=gitprov::a pull request from a fork gets a read-only token: "
            "no plan comment; the plan is in the job summary\n"
        )
        return 0
    try:
        body = comment_body(markdown, args.marker, args.footer)
        posted = post_sticky(gh_cli(args.gh), pr, body, args.marker, args.author)
    except GitprovError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        out.write(f"::error title=gitprov::{_escape(exc.message + hint)}\n")
        return exc.exit_code
    out.write(f"gitprov: plan comment {posted.action}: {posted.url or posted.comment_id}\n")
    return 0


def _escape(text: str) -> str:
    # Workflow commands end at a newline; GitHub decodes these escapes.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


if __name__ == "__main__":
    sys.exit(main())
