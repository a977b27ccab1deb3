"""The plan's sticky comment on a pull request, for gitprov's GitHub action.

One comment per pull request, found again by a hidden marker and edited on every push,
so the conversation holds the plan of the latest push once instead of one comment per
push. HTTP goes through `gh api` (on every GitHub-hosted runner; it takes the token from
GH_TOKEN and never prints it).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gitprov.errors import GitprovError, UsageError

MARKER = "<!-- gitprov-plan -->"
BODY_LIMIT = 65_536  # characters GitHub takes in one comment body
BOT = "github-actions[bot]"  # who writes with the workflow's GITHUB_TOKEN

# `gh api` as a function: arguments and stdin in, stdout out; GitprovError on failure.
Gh = Callable[[Sequence[str], str | None], str]


@dataclass(frozen=True)
class PullRequest:
    repository: str  # owner/name the pull request is in
    number: int
    head_repository: str  # owner/name its branch lives in

    @property
    def from_fork(self) -> bool:
        # A fork's pull_request run gets a read-only token: commenting would fail.
        return self.head_repository.lower() != self.repository.lower()


@dataclass(frozen=True)
class Posted:
    action: str  # "created" or "updated"
    comment_id: int
    url: str


def pull_request_of(event: Mapping[str, Any], repository: str) -> PullRequest | None:
    """The pull request of a webhook event (GITHUB_EVENT_PATH), or None for a push."""
    pr = event.get("pull_request")
    if not isinstance(pr, Mapping) or not isinstance(pr.get("number"), int):
        return None
    head = pr.get("head") or {}
    head_repo = (head.get("repo") or {}) if isinstance(head, Mapping) else {}
    # A deleted fork has no repo: treat it as a fork, whose token cannot comment either.
    full = head_repo.get("full_name") if isinstance(head_repo, Mapping) else None
    return PullRequest(repository, pr["number"], full if isinstance(full, str) else "")


def parse_pages(text: str) -> list[dict[str, Any]]:
    """The items of `gh api --paginate` output: one JSON array, or one array per page
    written back to back (gh versions differ)."""
    decoder = json.JSONDecoder()
    items: list[dict[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        page, end = decoder.raw_decode(text, pos)
        if not isinstance(page, list):
            raise ValueError(f"expected a JSON array, got {type(page).__name__}")
        items.extend(x for x in page if isinstance(x, dict))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return items


def find_comment(comments: Iterable[Mapping[str, Any]], marker: str, author: str) -> int | None:
    """The id of the oldest comment by `author` that starts with `marker`. Others' comments
    are never picked, even when they quote the marker."""
    for c in comments:
        user = c.get("user") or {}
        body = c.get("body") or ""
        if user.get("login") == author and body.startswith(marker) and isinstance(c.get("id"), int):
            return int(c["id"])
    return None


def comment_body(markdown: str, marker: str = MARKER, footer: str = "") -> str:
    body = f"{marker}\n{markdown.rstrip()}\n"
    if footer:
        body += f"\n---\n{footer}\n"
    if len(body) > BODY_LIMIT:
        raise UsageError(
            f"the comment would be {len(body):,} characters; GitHub takes at most {BODY_LIMIT:,}",
            hint="cap the plan lower (gitprov plan --max-chars; the action's "
            "comment-max-chars input)",
        )
    return body


def post_sticky(
    gh: Gh, pr: PullRequest, body: str, marker: str = MARKER, author: str = BOT
) -> Posted:
    """Edit the pull request's comment that starts with `marker`, or create it."""
    listing = gh(
        ["api", "--paginate", f"repos/{pr.repository}/issues/{pr.number}/comments?per_page=100"],
        None,
    )
    try:
        comments = parse_pages(listing)
    except ValueError as exc:
        raise GitprovError(f"gh api returned no comment list: {exc}") from None
    found = find_comment(comments, marker, author)
    payload = json.dumps({"body": body})
    if found is None:
        method, action = "POST", "created"
        path = f"repos/{pr.repository}/issues/{pr.number}/comments"
    else:
        method, action = "PATCH", "updated"
        path = f"repos/{pr.repository}/issues/comments/{found}"
    reply = gh(["api", "--method", method, path, "--input", "-"], payload)
    try:
        doc = json.loads(reply)
        return Posted(action, int(doc["id"]), str(doc.get("html_url", "")))
    except (ValueError, KeyError, TypeError):
        raise GitprovError(f"gh api {method} {path} answered without a comment id") from None


def gh_cli(program: str = "gh") -> Gh:
    def call(args: Sequence[str], stdin: str | None) -> str:
        try:
            done = subprocess.run(
                [program, *args],
                input=stdin,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except FileNotFoundError:
            raise UsageError(
                f"{program} not found",
                hint="the GitHub CLI is on GitHub-hosted runners; "
                "install it on a self-hosted one (Debian package gh)",
            ) from None
        except subprocess.TimeoutExpired:
            raise GitprovError(f"{program} {' '.join(args[:3])}: no answer in 120 s") from None
        if done.returncode != 0:
            raise GitprovError(
                f"{program} {' '.join(args[:3])} failed: {done.stderr.strip()[:500]}",
                hint="the job needs `permissions: pull-requests: write`, and GH_TOKEN set",
            )
        return done.stdout

    return call
