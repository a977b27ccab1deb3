from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitprov.rule_url import (
    RuleSyntaxError,
    RuleUrl,
    authority,
    format_rule,
    joined,
    key_problem,
    parse_rule,
    redact_text,
)


def url(
    scheme: str = "tftp",
    host: str = "",
    port: int = 69,
    path: str = "/",
    *,
    key: str | None = None,
    uid: str | None = None,
    pwd: str | None = None,
    explicit_scheme: bool = True,
) -> RuleUrl:
    return RuleUrl(scheme, host, port, path, key, uid, pwd, explicit_scheme)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The overview's URLs (sections 2.1, 2.2, 4).
        (
            "tftp://prov.call.com/cpe/CW$MA.conf",
            url("tftp", "prov.call.com", 69, "/cpe/CW$MA.conf"),
        ),
        (
            "http://neptune.speak.net:8080/prov/$PN/$MAU.conf",
            url("http", "neptune.speak.net", 8080, "/prov/$PN/$MAU.conf"),
        ),
        (
            "https://192.168.20.17/param_$MAU.conf",
            url("https", "192.168.20.17", 443, "/param_$MAU.conf"),
        ),
        (
            "https://192.168.20.17/G502_F107_S334.bin",
            url("https", "192.168.20.17", 443, "/G502_F107_S334.bin"),
        ),
        (
            "http://www.flyingvoice.com/fv$(MAU).conf",
            url("http", "www.flyingvoice.com", 80, "/fv$(MAU).conf"),
        ),
        (
            "tftp://www.flyingvoice.com/fv$(MAU).conf",
            url("tftp", "www.flyingvoice.com", 69, "/fv$(MAU).conf"),
        ),
        ("tftp://192.168.1.1/IP542N.bin", url("tftp", "192.168.1.1", 69, "/IP542N.bin")),
        (
            "[--key 123456]tftp://server/path/param-enc.conf",
            url("tftp", "server", 69, "/path/param-enc.conf", key="123456"),
        ),
    ],
)
def test_reference_rules(text: str, expected: RuleUrl) -> None:
    assert parse_rule(text) == expected
    assert format_rule(expected) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # No scheme: TFTP; no server: the one DHCP option 66 names.
        ("/fv$(MAU).conf", url(path="/fv$(MAU).conf", explicit_scheme=False)),
        ("tftp:///fv$MA.conf", url(path="/fv$MA.conf")),
        (
            "prov.example.com/a.conf",
            url(host="prov.example.com", path="/a.conf", explicit_scheme=False),
        ),
        ("prov:6969/a.conf", url(host="prov", port=6969, path="/a.conf", explicit_scheme=False)),
        ("http://10.0.0.1:80/a", url("http", "10.0.0.1", 80, "/a")),
        ("https://h:443/a", url("https", "h", 443, "/a")),
        ("tftp://h:69/a", url("tftp", "h", 69, "/a")),
        ("http://h:65535/a", url("http", "h", 65535, "/a")),
        ("http://h:1/a", url("http", "h", 1, "/a")),
        (
            "HTTP://Prov.Example.COM/A.conf",
            url("http", "Prov.Example.COM", 80, "/A.conf")._replace(scheme_case_at=0),
        ),
        ("http://[2001:db8::1]/a", url("http", "2001:db8::1", 80, "/a")),
        ("http://[2001:db8::1]:8080/a", url("http", "2001:db8::1", 8080, "/a")),
        ("[::1]/a", url(host="::1", path="/a", explicit_scheme=False)),
        ("http://h/cfg?mac=$MA&pn=$PN", url("http", "h", 80, "/cfg?mac=$MA&pn=$PN")),
        ("  http://h/a\n", url("http", "h", 80, "/a")),
    ],
)
def test_defaults_and_forms(text: str, expected: RuleUrl) -> None:
    assert parse_rule(text) == expected


@pytest.mark.parametrize(
    ("text", "key", "uid", "pwd"),
    [
        ("[--key 123456]/a", "123456", None, None),
        ("[--key '12 34']/a", "12 34", None, None),
        ('[--key "12 34"]/a', "12 34", None, None),
        ('[--key "a]b"]/a', "a]b", None, None),
        ("[--key 'say \"hi\"']/a", 'say "hi"', None, None),
        ("[--key it's]/a", "it's", None, None),
        ("[--key $(SA)]/a", "$(SA)", None, None),
        ("[--key fv$MA]/a", "fv$MA", None, None),
        ('[--key "--dash"]/a', "--dash", None, None),
        ("[ --key  k ] /a", "k", None, None),
        ("[\t--key\tk\t]\t/a", "k", None, None),
        ("[--key k --uid u --pwd p]http://h/a", "k", "u", "p"),
        ("[--pwd p --uid u]http://h/a", None, "u", "p"),
        ("[--uid u]https://h/a", None, "u", None),
        ("[]/a", None, None, None),
    ],
)
def test_options(text: str, key: str | None, uid: str | None, pwd: str | None) -> None:
    parsed = parse_rule(text)
    assert (parsed.key, parsed.uid, parsed.pwd) == (key, uid, pwd)


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("", 0, "the rule is empty"),
        ("   ", 0, "the rule is empty"),
        ("[--key 1]", 9, "not followed by a URL"),
        ("[--key 1]  ", 9, "not followed by a URL"),
        # SPA extras.
        ("http://a/x.conf | http://b/x.conf", 16, "'|' are an SPA extension"),
        ("[--key 1]/a|/b", 11, "not supported by Flying Voice firmware"),
        ("( $A == 1 )? http://h/a", 0, "SPA conditions"),
        ("( $A = 1; )! http://h/a", 0, "not supported by Flying Voice firmware"),
        ("[--key 1] ( $A == 1 )? http://h/a", 10, "SPA conditions"),
        # Options.
        ("[--key 123456 tftp://server/a", 14, "close the option bracket with ']'"),
        ("[--key 12 34]/a", 10, "quote a value that holds spaces"),
        ("[--key 123456", 0, "not closed; write ']'"),
        ("[--key]/a", 1, "--key needs a value"),
        ("[--key ]/a", 1, "--key needs a value"),
        ("[--key --uid u]http://h/a", 1, "--key needs a value"),
        ("[--key '']/a", 7, "empty value"),
        ("[--key 'abc]/a", 7, "unterminated ' quote"),
        ('[--key "a b"c]/a', 12, 'inside the " quotes'),
        ("[--key ‘123456’]/a", 7, "typographic quote"),
        ("[--key=123456]/a", 1, "write --key VALUE with a space"),
        ("[--secret 1]/a", 1, "unknown option '--secret'"),
        ("[-key 1]/a", 1, "unknown option '-key'"),
        ("[--key 1 --key 2]/a", 9, "--key is given twice"),
        ("[--key 1][--uid u]http://h/a", 9, "options go in one bracket"),
        ("[--uid u --pwd p]tftp://h/a", 0, "TFTP has no authentication"),
        ("[--uid u]/a", 0, "TFTP has no authentication"),
        ("[--pwd p]http://h/a", 0, "--pwd without --uid"),
        # Scheme.
        ("ftp://h/a", 0, "unsupported scheme 'ftp'"),
        ("[--key 1]sftp://h/a", 9, "unsupported scheme 'sftp'"),
        ("http:/h/a", 5, "write http:// with two slashes"),
        ("tftp:h/a", 5, "write tftp:// with two slashes"),
        # Server and port.
        ("http:///a", 7, "http needs a server"),
        ("https://:443/a", 8, "a port without a server"),
        ("http://h:0/a", 9, "port 0 is out of range"),
        ("http://h:65536/a", 9, "port 65536 is out of range"),
        ("http://h:/a", 9, "port '' is not a number"),
        ("http://h:http/a", 9, "port 'http' is not a number"),
        ("http://h:8o80/a", 9, "port '8o80' is not a number"),
        ("http://$SERVIP/a", 7, "the server must be written literally"),
        ("http://prov$MA.example.com/a", 11, "the server must be written literally"),
        ("http://user:pw@h/a", 14, "write [--uid USER --pwd PASS]URL"),
        ("http://2001:db8::1/a", 7, "IPv6 address must be in brackets"),
        ("http://[2001:db8::1/a", 7, "IPv6 address is not closed"),
        ("http://[2001:db8::g]/a", 8, "is not an IPv6 address"),
        ("http://[fe80::1%eth0]/a", 8, "is not an IPv6 address"),
        ("http://[::1]x/a", 12, "after ']' write ':PORT'"),
        ("http://192.168.20.256/a", 7, "not an IPv4 address"),
        ("http://10.0.0/a", 7, "not an IPv4 address"),
        ("http://prov_1.example.com/a", 7, "is not a host name"),
        ("http://-prov.example.com/a", 7, "is not a host name"),
        ("http://prov..example.com/a", 7, "is not a host name"),
        # Path.
        ("http://h", 8, "needs a file path starting with '/'"),
        ("fv$(MAU).conf", 13, "needs a file path starting with '/'"),
        ("http://h/", 8, "names no file"),
        ("http://h/cfg/", 12, "names no file"),
        ("//h/a.conf", 0, "has no scheme"),
        ("http://server IP/path", 13, "whitespace inside the URL"),
        ("http://h/a\tb", 10, "whitespace inside the URL"),
        (
            'http://h/a"b.conf',
            10,
            "'\"' cannot stand in a URL as it is; write it percent-encoded (%22)",
        ),
        ("http://h/a]b/x.conf", 10, "']' cannot stand in a URL"),
        ("[--key 1]tftp://h/{x}.bin", 18, "'{' cannot stand in a URL"),
        ("http://h/a\\b", 10, "'\\\\' cannot stand in a URL"),
        ("http://h/a\x00b", 10, "control character U+0000"),
        ("[--key 'a\nb']/a", 9, "control character U+000A"),
    ],
)
def test_errors(text: str, offset: int, message: str) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rule(text)
    assert caught.value.offset == offset
    assert message in caught.value.message
    assert str(caught.value) == caught.value.message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "/a.conf",
        "tftp:///a.conf",
        "h/a.conf",
        "h:6969/a.conf",
        "[::1]/a.conf",
        "[--key k][::1]/a.conf",
        "http://h:8080/$PN/$(MAU:4).conf",
        "https://[2001:db8::1]:8443/a",
        "[--key 123456]tftp://server/path/param-enc.conf",
        "[--key '12 \"34\"']/a",
        '[--key "a]b" --uid u --pwd "p w"]https://h/a',
        '[--key "--k"]/a',
        "[--key it's]/a",
    ],
)
def test_canonical_rules_round_trip(text: str) -> None:
    assert format_rule(parse_rule(text)) == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("HTTP://h:80/a", "http://h/a"),
        ("tftp://h:69/a", "tftp://h/a"),
        ("[ --key  'k' ] /a", "[--key k]/a"),
        ("[]/a", "/a"),
        ("[--pwd p --uid u]http://h/a", "[--uid u --pwd p]http://h/a"),
        ("http://h:0080/a", "http://h/a"),
    ],
)
def test_format_is_canonical(text: str, canonical: str) -> None:
    assert format_rule(parse_rule(text)) == canonical


def test_format_quotes_only_when_needed() -> None:
    assert format_rule(url(path="/a", key="k$MA")) == "[--key k$MA]tftp:///a"
    assert format_rule(url(path="/a", key="a b")) == '[--key "a b"]tftp:///a'
    assert format_rule(url(path="/a", key='a "b"')) == "[--key 'a \"b\"']tftp:///a"
    assert format_rule(url(path="/a", key="'k")) == '[--key "\'k"]tftp:///a'
    assert format_rule(url(path="/a", key="«k»")) == '[--key "«k»"]tftp:///a'
    assert format_rule(url(path="/a", key="--k")) == '[--key "--k"]tftp:///a'
    with pytest.raises(ValueError, match="both quote characters"):
        format_rule(url(path="/a", key="'a b\""))


def test_format_writes_a_scheme_that_is_not_the_default() -> None:
    assert format_rule(url("http", "h", 80, "/a", explicit_scheme=False)) == "http://h/a"


def test_secrets_are_redacted() -> None:
    parsed = parse_rule("[--key s3cr3t --uid alice --pwd hunter2]http://h/a")
    for shown in (repr(parsed), str(parsed), f"{parsed}", f"{parsed!r}", repr([parsed])):
        assert "s3cr3t" not in shown
        assert "hunter2" not in shown
        assert "***" in shown
    assert repr(parsed) == (
        "RuleUrl(scheme='http', host='h', port=80, path='/a', key='***', uid='alice', "
        "pwd='***', explicit_scheme=True)"
    )
    assert str(parsed) == "[--key *** --uid alice --pwd ***]http://h/a"
    assert parsed.key == "s3cr3t"
    assert parsed.pwd == "hunter2"


def test_no_secret_shows_none() -> None:
    parsed = parse_rule("/a")
    assert "key=None" in repr(parsed)
    assert "pwd=None" in repr(parsed)
    assert str(parsed) == "/a"


_RULE_ALPHABET = st.sampled_from([*"[]-'\" \t/:.$()|@%hkeyuidpwtfsHK0123456789", "://"])


@given(st.lists(_RULE_ALPHABET, max_size=40).map("".join))
def test_any_text_parses_or_says_where_it_fails(text: str) -> None:
    try:
        parsed = parse_rule(text)
    except RuleSyntaxError as error:
        assert 0 <= error.offset <= len(text)
        assert error.message
    else:
        assert parse_rule(format_rule(parsed)) == parsed


_PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1)


@given(st.sampled_from(["key", "uid", "pwd"]), _PRINTABLE)
def test_any_option_value_survives_format(option: str, value: str) -> None:
    options = {"key": "k", "uid": "u", "pwd": "p"} | {option: value}
    changed = url("http", "h", 80, "/a", key=options["key"], uid=options["uid"], pwd=options["pwd"])
    try:
        rendered = format_rule(changed)
    except ValueError:
        assert "'" in value
        assert '"' in value
        return
    assert parse_rule(rendered) == changed


@pytest.mark.parametrize("key", ["123456", "ttc2lt2silzspihvahkpoyzt", "Key-1_a.b", "a:b/c"])
def test_key_problem_passes_a_key_a_rule_carries(key: str) -> None:
    # The overview, 4.4: "[--key 123456]tftp://server IP or domain/path/param-enc.conf".
    assert key_problem(key) is None


@pytest.mark.parametrize(
    "key",
    ["my key", "a$MAb", "ab$$cd", "x]y", "'q", '"q', "--k", " k", "\tk", "pa\"ss'word", "ab'c"],
)
def test_key_problem_refuses_a_key_the_device_would_read_otherwise(key: str) -> None:
    assert key_problem(key) is not None


def test_key_problem_never_names_the_key() -> None:
    reason = key_problem("Secret9 Q7zx")
    assert reason is not None and "Secret9" not in reason and "Q7zx" not in reason


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://bob:Hunter2@prov.example.com/f", "http://bob:***@prov.example.com/f"),
        ("ftp://bob:Hunter2@h", "ftp://bob:***@h"),
        (
            "[--key Hunter2 --uid bob --pwd Hunter2]http://h/f",
            "[--key *** --uid bob --pwd ***]http://h/f",
        ),
        ("[--KEY=Hunter2]tftp://h/f", "[--KEY=***]tftp://h/f"),
        # Nothing secret: as written (a user without a password names no secret).
        ("http://bob@h/f", "http://bob@h/f"),
        ("http://prov.example.com:8080/f", "http://prov.example.com:8080/f"),
        ("mail me at a@b:c", "mail me at a@b:c"),
    ],
)
def test_redact_text_hides_what_a_rule_that_does_not_parse_may_carry(text: str, shown: str) -> None:
    assert redact_text(text) == shown


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h", "http://h/f.conf"),
        ("http://h/", "http://h/f.conf"),
        ("http://h/prov//", "http://h/prov/f.conf"),
        ("tftp://", "tftp:///f.conf"),
        ("tftp:///", "tftp:///f.conf"),
        ("tftp://h:69", "tftp://h:69/f.conf"),
    ],
)
def test_a_file_joined_to_a_base_url_keeps_the_scheme_whole(base: str, url: str) -> None:
    assert joined(base, "f.conf") == url
    assert parse_rule(url).path.endswith("/f.conf")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("HTTP://fw.example.com/a.bin", "http://fw.example.com/a.bin"),
        ("[--key 1]Tftp://h/a{b}.bin", "[--key 1]tftp://h/a%7Bb%7D.bin"),
        ("http://[2001:db8::1]/a[1].bin", "http://[2001:db8::1]/a%5B1%5D.bin"),
        ("/fv$(MA).conf", "/fv$(MA).conf"),
        ("http://h/a.bin", "http://h/a.bin"),
    ],
)
def test_a_rule_from_a_device_file_is_written_as_gp110_asks(text: str, canonical: str) -> None:
    """What `gitprov import` takes: the same URL to a server, in the form a rule written
    in the inventory must have (lower-case scheme, nothing a URL carries unencoded)."""
    from gitprov.rule_url import canonical_rule

    assert canonical_rule(text) == canonical
    parse_rule(canonical)  # (and it parses)


@pytest.mark.parametrize(
    ("host", "port", "written"),
    [
        ("127.0.0.1", 9351, "127.0.0.1:9351"),
        ("prov.example.net", 8080, "prov.example.net:8080"),
        ("::1", 9351, "[::1]:9351"),
        ("::", 0, "[::]:0"),
        ("2001:db8::10", None, "[2001:db8::10]"),
        ("[::1]", 69, "[::1]:69"),  # (bracketed once)
        ("10.0.0.1", None, "10.0.0.1"),
    ],
)
def test_authority_brackets_an_ipv6_address(host: str, port: int | None, written: str) -> None:
    """`http://::1:9351/metrics` is no URL: every host:port a URL or message names goes
    through `authority`."""
    assert authority(host, port) == written
