"""The Profile Rule parser against hostile text: a rule parses, or says where it fails
(RuleSyntaxError with an offset inside the text); never another exception. What parses
formats back to itself. fuzz/fuzz_rule_url.py runs the same property under atheris."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gitprov.rule_url import RuleSyntaxError, format_rule, parse_rule

# Pieces of rules as people (and attackers) write them: schemes, hosts, ports of every
# length, IPv6 brackets, option brackets with quoted values, macros, SPA extras.
PIECES = st.sampled_from(
    [
        "http://", "https://", "tftp://", "HTTP://", "ftp://", "tftp:", "//", "://",
        "prov.example.com", "192.0.2.10", "256.1.1.1", "[2001:db8::1]", "[::1", "[fe80::%eth0]",
        ":", ":80", ":0", ":65536", ":" + "9" * 40, ":" + "0" * 30 + "8", ":x",
        "/", "/cfg/$MA.conf", "$(MAU:4)", "$(", ")", "$$", "%", "?", "#", "@",
        "[", "]", "[--key ", "--key", "--uid", "--pwd", " ", "\t", "'", '"', "“", "”",
        "( ", " ? ", " ! ", "|", ";", "\\", "\x00", "\n", "\x1b", "\u202e", "\u2028", "é", "李",
    ]
)  # fmt: skip
RULES = st.one_of(
    st.lists(PIECES, max_size=12).map("".join),
    st.text(max_size=60),
    st.tuples(
        st.sampled_from(["", "[--key k]", "[--key 'a b']", '[--uid u --pwd "p w"]']),
        st.sampled_from(["http://", "https://", "tftp://", ""]),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
        st.sampled_from(["", ":8080", ":" + "9" * 5000]),
        st.text(max_size=20).map(lambda p: "/" + p),
    ).map("".join),
)


def check(text: str) -> None:
    try:
        parsed = parse_rule(text)
    except RuleSyntaxError as exc:
        assert 0 <= exc.offset <= len(text), (text, exc.offset)
        assert exc.message
        return
    try:
        formatted = format_rule(parsed)
    except ValueError:
        # The one rule that cannot be written: an option value holding both quotes.
        assert any("'" in v and '"' in v for v in (parsed.key, parsed.uid, parsed.pwd) if v)
        return
    assert parse_rule(formatted) == parsed


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RULES)
@example("http://h:" + "9" * 5000 + "/a")  # a ValueError, not a RuleSyntaxError, once
@example("[--key " + "x" * 100_000 + "]http://h/a")
@example("http://" + "a." * 5000 + "/x")
def test_any_rule_parses_or_says_where_it_fails(text: str) -> None:
    started = time.monotonic()
    check(text)
    assert time.monotonic() - started < 1, "the parser should be linear"
