"""The sticky plan comment: which comment is ours, what gh is asked, and what is refused.
gh is a function here; tests/github_test.py runs the action with a gh program on PATH."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from gitprov.errors import GitprovError, UsageError
from gitprov.tools.github import (
    BODY_LIMIT,
    BOT,
    MARKER,
    PullRequest,
    comment_body,
    find_comment,
    parse_pages,
    post_sticky,
    pull_request_of,
)

PR = PullRequest("acme/fleet", 7, "acme/fleet")


def comment(id: int, login: str, body: str) -> dict[str, Any]:
    return {"id": id, "user": {"login": login}, "body": body, "html_url": f"https://x/{id}"}


def test_pages_back_to_back_or_merged_read_the_same() -> None:
    a, b, c = comment(1, "a", "x"), comment(2, "b", "y"), comment(3, "c", "z")
    merged = json.dumps([a, b, c])
    paged = json.dumps([a, b]) + "\n" + json.dumps([c]) + "\n"
    assert parse_pages(merged) == parse_pages(paged) == [a, b, c]
    assert parse_pages("") == parse_pages("[]") == []
    with pytest.raises(ValueError):
        parse_pages('{"message": "Not Found"}')


def test_only_the_bots_own_comment_that_starts_with_the_marker_is_ours() -> None:
    comments = [
        comment(1, "octocat", f"{MARKER}\nquoting the bot"),  # a person quoting it
        comment(2, BOT, "a comment of another workflow"),
        comment(3, BOT, f"look: {MARKER}"),  # the marker, but not first
        comment(4, BOT, f"{MARKER}\n### gitprov plan"),
        comment(5, BOT, f"{MARKER}\n### gitprov plan (a duplicate)"),
    ]
    assert find_comment(comments, MARKER, BOT) == 4
    assert find_comment(comments[:4], MARKER, "someone[bot]") is None
    assert find_comment([], MARKER, BOT) is None


def test_the_body_starts_with_the_marker_and_never_passes_githubs_limit() -> None:
    body = comment_body("### plan\n\n", footer="<sub>run 1</sub>")
    assert body == f"{MARKER}\n### plan\n\n---\n<sub>run 1</sub>\n"
    assert len(comment_body("x" * (BODY_LIMIT - len(MARKER) - 2))) == BODY_LIMIT
    with pytest.raises(UsageError, match="65,536"):
        comment_body("x" * (BODY_LIMIT - len(MARKER) - 1))


def test_pull_request_facts_from_the_event() -> None:
    def event(head: str) -> dict[str, Any]:
        return {"pull_request": {"number": 7, "head": {"repo": {"full_name": head}}}}

    pr = pull_request_of(event("someone/fleet"), "acme/fleet")
    assert pr == PullRequest("acme/fleet", 7, "someone/fleet") and pr.from_fork
    same = pull_request_of(event("ACME/fleet"), "acme/fleet")
    assert same is not None and not same.from_fork
    # A deleted fork: no repo at all.
    assert pull_request_of({"pull_request": {"number": 7, "head": {"repo": None}}}, "a/b")
    assert pull_request_of({"ref": "refs/heads/main"}, "acme/fleet") is None


class FakeGh:
    """Answers like the REST API behind gh, keeps the calls."""

    def __init__(self, comments: list[dict[str, Any]]) -> None:
        self.comments = comments
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, args: Sequence[str], stdin: str | None) -> str:
        self.calls.append((list(args), stdin))
        if "--paginate" in args:
            return json.dumps(self.comments)
        method, path = args[args.index("--method") + 1], args[args.index("--method") + 2]
        body = json.loads(stdin or "{}")["body"]
        if method == "POST":
            new = comment(100 + len(self.comments), BOT, body)
            self.comments.append(new)
            return json.dumps(new)
        (found,) = [c for c in self.comments if path.endswith(f"/comments/{c['id']}")]
        found["body"] = body
        return json.dumps(found)


def test_created_once_then_edited_in_place() -> None:
    gh = FakeGh([comment(1, "octocat", f"{MARKER} quoted")])
    first = post_sticky(gh, PR, comment_body("plan 1"))
    assert (first.action, first.comment_id) == ("created", 101)
    second = post_sticky(gh, PR, comment_body("plan 2"))
    assert (second.action, second.comment_id) == ("updated", 101)
    methods = [
        (a[a.index("--method") + 1], a[a.index("--method") + 2])
        for a, _ in gh.calls
        if "--method" in a
    ]
    assert methods == [
        ("POST", "repos/acme/fleet/issues/7/comments"),
        ("PATCH", "repos/acme/fleet/issues/comments/101"),
    ]
    assert [c["body"] for c in gh.comments] == [f"{MARKER} quoted", f"{MARKER}\nplan 2\n"]


def test_an_answer_without_a_comment_is_an_error() -> None:
    def gh(args: Sequence[str], stdin: str | None) -> str:
        return "[]" if "--paginate" in args else '{"message": "Validation Failed"}'

    with pytest.raises(GitprovError, match="without a comment id"):
        post_sticky(gh, PR, comment_body("plan"))
