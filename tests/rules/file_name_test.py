"""GP107's reasons: the quick acceptance of plain names agrees with the full check."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from gitprov.rules.file_name import _reason, unsafe_reason

# Mostly the characters of file names and of what makes one unsafe.
_names = st.text(
    alphabet=st.sampled_from("aZ09_-./\\\t\x00\u202e é%?#$\xa0"), max_size=12
) | st.text(max_size=300)


@given(_names)
@example("")
@example(".")
@example("..")
@example("a..b")
@example(".gitprov-x.tmp")
@example("a" * 255)
@example("a" * 256)
@example("é" * 128)
def test_the_quick_path_gives_the_full_checks_answer(name: str) -> None:
    assert unsafe_reason(name) == _reason(name)


def test_plain_names_are_safe_and_the_rest_say_why() -> None:
    assert unsafe_reason("fv0004f2aabbcc.conf") is None
    assert unsafe_reason("IP542N.conf") is None
    assert unsafe_reason("a..conf") == "it contains '..'"
    assert unsafe_reason(".hidden.conf") == "it starts with '.', and dot-files are never served"
    assert unsafe_reason("a" * 256) == "it is longer than 255 bytes"


def test_what_a_url_reads_as_syntax_is_refused_naming_it() -> None:
    """The device asks for the name inside its Profile Rule's URL: nginx decodes
    fv%41.conf to fvA.conf, and fv.conf?x or fv.conf#x reach the server as fv.conf."""
    for name, char in (("fv%2e%2e.conf", "'%'"), ("fv.conf?x=1", "'?'"), ("fv#1.conf", "'#'")):
        reason = unsafe_reason(name)
        assert reason is not None and reason.startswith(f"it contains {char}, which a URL"), name
    assert unsafe_reason("a%b?c.conf") == (
        "it contains '%' and '?', which a URL reads as an escape, a query or a fragment: "
        "the device would ask for another name"
    )


def test_whitespace_and_a_dollar_are_refused_naming_them() -> None:
    """A Profile Rule's URL ends at whitespace; the device expands a `$` in it."""
    for name in ("fvVOIP ATA-0021f2a0c001.conf", "fv\xa0x.conf", "fv\u2003x.conf"):
        reason = unsafe_reason(name)
        assert reason is not None and reason.startswith("it contains whitespace"), name
    reason = unsafe_reason("fv$MA.conf")
    assert reason is not None and reason.startswith("it contains '$'")


def test_what_no_url_carries_unencoded_is_refused_naming_it() -> None:
    """A `product_name` of `G502N|FXS` through `$(PN)` made every Profile Rule two
    alternative URLs (the SPA syntax's `|`), which gitprov's own rule parser refuses."""
    for char in '|"<>^`{}[]':
        reason = unsafe_reason(f"fvG502N{char}FXS-0021f2a0c001.conf")
        assert reason is not None and repr(char) in reason, (char, reason)
    assert "'|'" in (unsafe_reason("fv|x.conf") or "")
    # What a URL's path may hold as it is: sub-delims, ':' and '@', and a '~'.
    for name in ("fv!x.conf", "fv(1)+a,b;c=d&e'f*g.conf", "fv:a@b~c.conf"):
        assert unsafe_reason(name) is None, name
