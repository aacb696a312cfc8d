"""Digest authentication against the RFC worked examples, a real PBX capture and hashlib."""

from __future__ import annotations

import hashlib
import re

import pytest

from intercom.errors import AuthError
from intercom.sip.auth import (
    Challenge,
    Credentials,
    DigestClient,
    digest_response,
    mask_secrets,
    parse_challenge,
)

# The parser under test is not used to read our own output back: this one is deliberately
# simple-minded so that a quoting bug in the module cannot hide behind a matching parser bug.
_PARAM_RE = re.compile(r'\s*([a-z]+)=("([^"]*)"|([^",\s]+))\s*(?:,|$)')


def parse_authorization(value: str) -> tuple[dict[str, str], set[str]]:
    """Returns (params, names that were quoted) of an Authorization header value."""
    assert value.startswith("Digest ")
    rest = value[len("Digest ") :]
    params: dict[str, str] = {}
    quoted: set[str] = set()
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        assert m is not None, f"unparseable at {rest[pos:]!r}"
        name = m.group(1)
        assert name not in params, f"duplicate {name}"
        if m.group(3) is not None:
            params[name] = m.group(3)
            quoted.add(name)
        else:
            params[name] = m.group(4)
        pos = m.end()
    return params, quoted


def fixed(*values: str):
    """A cnonce factory that hands out ``values`` in order and fails loudly when exhausted."""
    it = iter(values)
    return lambda: next(it)


def never() -> str:
    raise AssertionError("cnonce requested where none should be sent")


def h(name: str, data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.new(name, raw).hexdigest()


# ---------------------------------------------------------------------------------------------
# RFC worked examples

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_worked_example_pure_function() -> None:
    assert (
        digest_response(
            "MD5",
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "auth",
            b"",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2617_worked_example_through_client() -> None:
    challenge = parse_challenge(RFC2617_CHALLENGE)
    client = DigestClient(Credentials("Mufasa", "Circle Of Life"), cnonce_factory=fixed("0a4f113b"))
    params, quoted = parse_authorization(client.authorize(challenge, "GET", "/dir/index.html"))
    assert params == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "response": "6629fae49393a05397450978507c4ef1",
        "algorithm": "MD5",
        "cnonce": "0a4f113b",
        "qop": "auth",
        "nc": "00000001",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
    }
    assert quoted == {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"}


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_worked_examples(algorithm: str, expected: str) -> None:
    # Laid out as in RFC 7616 §3.9.1, folded over several lines.
    challenge = parse_challenge(
        "Digest\r\n"
        '    realm="http-auth@example.org",\r\n'
        '    qop="auth, auth-int",\r\n'
        f"    algorithm={algorithm},\r\n"
        f'    nonce="{RFC7616_NONCE}",\r\n'
        f'    opaque="{RFC7616_OPAQUE}"'
    )
    assert challenge == Challenge(
        scheme="Digest",
        realm="http-auth@example.org",
        nonce=RFC7616_NONCE,
        algorithm=algorithm,
        qop=("auth", "auth-int"),
        opaque=RFC7616_OPAQUE,
        stale=False,
        proxy=False,
    )
    client = DigestClient(
        Credentials("Mufasa", "Circle of Life"), cnonce_factory=fixed(RFC7616_CNONCE)
    )
    value = client.authorize(challenge, "GET", "/dir/index.html")
    params, quoted = parse_authorization(value)
    assert params == {
        "username": "Mufasa",
        "realm": "http-auth@example.org",
        "uri": "/dir/index.html",
        "algorithm": algorithm,
        "nonce": RFC7616_NONCE,
        "nc": "00000001",
        "cnonce": RFC7616_CNONCE,
        "qop": "auth",
        "response": expected,
        "opaque": RFC7616_OPAQUE,
    }
    assert quoted == {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"}
    assert DigestClient.header_name(challenge) == "Authorization"


# ---------------------------------------------------------------------------------------------
# The seed capture: Ozeki PBX 407 without qop (RFC 2069 style answer)

OZEKI_407 = 'Digest nonce="6652a236231c44029a9ae7bf793e15f9", realm="OzekiPBX", algorithm=MD5'


def test_ozeki_407_parses_as_proxy_challenge() -> None:
    challenge = parse_challenge(OZEKI_407, proxy=True)
    assert challenge == Challenge(
        scheme="Digest",
        realm="OzekiPBX",
        nonce="6652a236231c44029a9ae7bf793e15f9",
        algorithm="MD5",
        qop=(),
        opaque=None,
        stale=False,
        proxy=True,
    )
    assert DigestClient.header_name(challenge) == "Proxy-Authorization"


@pytest.mark.parametrize("password", ["1001", "not the real one"])
def test_ozeki_407_answer_is_rfc2069_style(password: str) -> None:
    challenge = parse_challenge(OZEKI_407, proxy=True)
    client = DigestClient(Credentials("1001", password), cnonce_factory=never)
    uri = "sip:9999@192.168.115.149"
    params, quoted = parse_authorization(client.authorize(challenge, "INVITE", uri))
    ha1 = h("md5", f"1001:OzekiPBX:{password}")
    ha2 = h("md5", f"INVITE:{uri}")
    assert params == {
        "username": "1001",
        "realm": "OzekiPBX",
        "nonce": "6652a236231c44029a9ae7bf793e15f9",
        "uri": uri,
        "response": h("md5", f"{ha1}:6652a236231c44029a9ae7bf793e15f9:{ha2}"),
        "algorithm": "MD5",
    }
    assert quoted == {"username", "realm", "nonce", "uri", "response"}


def test_ozeki_capture_response_reproduced() -> None:
    # The softphone in the capture answered with this response; its password turns out to be
    # "1001", which pins our RFC 2069 computation to what a real PBX accepted.
    client = DigestClient(Credentials("1001", "1001"), cnonce_factory=never)
    value = client.authorize(
        parse_challenge(OZEKI_407, proxy=True), "INVITE", "sip:9999@192.168.115.149"
    )
    assert parse_authorization(value)[0]["response"] == "b63eb535d3c711dd77ea15d4f022bc07"


# ---------------------------------------------------------------------------------------------
# -sess and auth-int against an independent computation

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("algorithm", "hash_name", "sess"),
    [
        ("MD5", "md5", False),
        ("MD5-sess", "md5", True),
        ("SHA-256", "sha256", False),
        ("SHA-256-sess", "sha256", True),
    ],
)
@pytest.mark.parametrize("offered_qop", ["auth", "auth-int"])
def test_algorithms_and_qops_match_hashlib(
    algorithm: str, hash_name: str, sess: bool, offered_qop: str
) -> None:
    challenge = parse_challenge(
        f'Digest realm="pbx.example", nonce="n0nce", qop="{offered_qop}", algorithm={algorithm}'
    )
    assert challenge.algorithm == algorithm.upper()
    client = DigestClient(Credentials("door", "s3cret"), cnonce_factory=fixed("c0ffee"))
    uri = "sip:620@pbx.example"
    params, _ = parse_authorization(client.authorize(challenge, "INVITE", uri, SDP))

    ha1 = h(hash_name, "door:pbx.example:s3cret")
    if sess:
        ha1 = h(hash_name, f"{ha1}:n0nce:c0ffee")
    a2 = f"INVITE:{uri}"
    if offered_qop == "auth-int":
        a2 += ":" + h(hash_name, SDP)
    expected = h(hash_name, f"{ha1}:n0nce:00000001:c0ffee:{offered_qop}:{h(hash_name, a2)}")

    assert params["response"] == expected
    assert params["qop"] == offered_qop
    assert params["algorithm"] == algorithm
    assert params["cnonce"] == "c0ffee"
    assert params["nc"] == "00000001"


def test_auth_preferred_over_auth_int() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int, auth"')
    client = DigestClient(Credentials("u", "p"), cnonce_factory=fixed("c"))
    params, _ = parse_authorization(client.authorize(challenge, "INVITE", "sip:x@r", SDP))
    assert params["qop"] == "auth"
    ha2 = h("md5", "INVITE:sip:x@r")
    assert params["response"] == h("md5", f"{h('md5', 'u:r:p')}:n:00000001:c:auth:{ha2}")


def test_auth_int_body_changes_response() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    a = DigestClient(Credentials("u", "p"), cnonce_factory=fixed("c"))
    b = DigestClient(Credentials("u", "p"), cnonce_factory=fixed("c"))
    ra = parse_authorization(a.authorize(challenge, "INVITE", "sip:x@r", b"one"))[0]
    rb = parse_authorization(b.authorize(challenge, "INVITE", "sip:x@r", b"two"))[0]
    assert ra["response"] != rb["response"]


def test_sess_without_qop_sends_cnonce_but_no_nc() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", algorithm=MD5-sess')
    client = DigestClient(Credentials("u", "p"), cnonce_factory=fixed("c"))
    params, _ = parse_authorization(client.authorize(challenge, "REGISTER", "sip:r"))
    ha1 = h("md5", f"{h('md5', 'u:r:p')}:n:c")
    assert params["response"] == h("md5", f"{ha1}:n:{h('md5', 'REGISTER:sip:r')}")
    assert params["cnonce"] == "c"
    assert "nc" not in params
    assert "qop" not in params


def test_unknown_qop_only_is_refused_when_parsed() -> None:
    # Issue 10, finding 11: refused by parse_challenge, so that authorize never has to.
    with pytest.raises(AuthError, match=r"^no supported qop offered \(got 'auth-conf'\)$"):
        parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"')
    with pytest.raises(AuthError, match="qop"):
        parse_challenge('Digest realm="r", nonce="n", qop="auth-conf, token"', proxy=True)


def test_unknown_qop_beside_a_known_one_is_ignored() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-conf,auth-int"')
    value = DigestClient(Credentials("u", "p")).authorize(challenge, "REGISTER", "sip:r")
    assert parse_authorization(value)[0]["qop"] == "auth-int"


def test_authorize_still_refuses_a_hand_made_challenge_with_an_unknown_qop() -> None:
    challenge = Challenge("Digest", "r", "n", "MD5", ("auth-conf",), None, False, False)
    with pytest.raises(AuthError, match="qop"):
        DigestClient(Credentials("u", "p")).authorize(challenge, "REGISTER", "sip:r")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Digest realm="a\rb", nonce="n"', "control character in the digest challenge's realm"),
        ('Digest realm="r", nonce="n\x00"', "control character in the digest challenge's nonce"),
        ('Digest realm="r", nonce="n", opaque="o\n"', "challenge's opaque"),
        ('Digest realm="\ud800", nonce="n"', "realm is not valid Unicode"),
    ],
)
def test_challenge_that_cannot_go_back_on_the_wire_is_refused(value: str, message: str) -> None:
    # The realm, nonce and opaque are echoed in our Authorization header: a CR there would end
    # the header early, and a lone surrogate would make authorize() raise UnicodeEncodeError.
    with pytest.raises(AuthError, match=re.escape(message)):
        parse_challenge(value)


def test_error_messages_are_short_whatever_the_challenge() -> None:
    with pytest.raises(AuthError) as info:
        parse_challenge('Digest realm="r", nonce="' + "n" * 5000)
    assert len(str(info.value)) < 120


def test_quotes_in_username_are_escaped_on_the_wire_but_hashed_raw() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    client = DigestClient(Credentials('do"or\\1', "p"), cnonce_factory=never)
    value = client.authorize(challenge, "REGISTER", "sip:r")
    assert 'username="do\\"or\\\\1"' in value
    ha1 = h("md5", 'do"or\\1:r:p')
    ha2 = h("md5", "REGISTER:sip:r")
    assert 'response="' + h("md5", f"{ha1}:n:{ha2}") + '"' in value


def test_default_cnonce_is_random_hex() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop=auth')
    first = parse_authorization(DigestClient(Credentials("u", "p")).authorize(challenge, "A", "b"))
    second = parse_authorization(DigestClient(Credentials("u", "p")).authorize(challenge, "A", "b"))
    assert re.fullmatch(r"[0-9a-f]{32}", first[0]["cnonce"])
    assert first[0]["cnonce"] != second[0]["cnonce"]


# ---------------------------------------------------------------------------------------------
# Nonce counting


def test_nonce_count_increments_and_resets_for_new_nonce() -> None:
    client = DigestClient(Credentials("u", "p"), cnonce_factory=fixed("c1", "c2"))
    first = parse_challenge('Digest realm="r", nonce="one", qop="auth"')
    second = parse_challenge('Digest realm="r", nonce="two", qop="auth"')

    def nc_and_cnonce(challenge: Challenge) -> tuple[str, str]:
        params = parse_authorization(client.authorize(challenge, "REGISTER", "sip:r"))[0]
        expected = digest_response(
            "MD5",
            "u",
            "r",
            "p",
            "REGISTER",
            "sip:r",
            challenge.nonce,
            params["nc"],
            params["cnonce"],
            "auth",
            b"",
        )
        assert params["response"] == expected
        return params["nc"], params["cnonce"]

    assert nc_and_cnonce(first) == ("00000001", "c1")
    assert nc_and_cnonce(first) == ("00000002", "c1")
    assert nc_and_cnonce(second) == ("00000001", "c2")
    assert nc_and_cnonce(second) == ("00000002", "c2")
    # The first nonce is still tracked, so a server that keeps accepting it sees nc climb on.
    assert nc_and_cnonce(first) == ("00000003", "c1")


def test_nonce_count_is_hex() -> None:
    client = DigestClient(Credentials("u", "p"), cnonce_factory=fixed("c"))
    challenge = parse_challenge('Digest realm="r", nonce="n", qop=auth')
    for _ in range(9):
        client.authorize(challenge, "OPTIONS", "sip:r")
    params = parse_authorization(client.authorize(challenge, "OPTIONS", "sip:r"))[0]
    assert params["nc"] == "0000000a"


def test_same_nonce_in_other_realm_counts_separately() -> None:
    client = DigestClient(Credentials("u", "p"), cnonce_factory=fixed("c1", "c2"))
    a = parse_challenge('Digest realm="a", nonce="n", qop=auth')
    b = parse_challenge('Digest realm="b", nonce="n", qop=auth', proxy=True)
    client.authorize(a, "INVITE", "sip:x")
    params = parse_authorization(client.authorize(b, "INVITE", "sip:x"))[0]
    assert (params["nc"], params["cnonce"]) == ("00000001", "c2")


# ---------------------------------------------------------------------------------------------
# Retry policy


def test_stale_challenge_is_always_retried() -> None:
    client = DigestClient(Credentials("u", "p"))
    stale = parse_challenge('Digest realm="r", nonce="n2", stale=TRUE')
    assert stale.stale is True
    assert all(client.should_retry(stale, failures) for failures in (0, 1, 2, 10))


def test_plain_challenge_retried_only_once() -> None:
    client = DigestClient(Credentials("u", "p"))
    plain = parse_challenge('Digest realm="r", nonce="n2", stale=false')
    assert plain.stale is False
    assert client.should_retry(plain, 0) is True
    assert client.should_retry(plain, 1) is False
    assert client.should_retry(plain, 2) is False


# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic realm="x"', "scheme 'Basic'"),
        ('Bearer realm="x"', "scheme 'Bearer'"),
        ("", "empty"),
        ("   ", "empty"),
        ('Digest nonce="n"', "no realm"),
        ('Digest realm="r"', "no nonce"),
        ("Digest", "no realm"),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', "algorithm 'SHA-512-256'"),
        ('Digest realm="r", nonce="n", algorithm=AKAv1-MD5', "algorithm 'AKAv1-MD5'"),
        ('Digest realm="r", nonce="n', "unterminated"),
    ],
)
def test_parse_errors(value: str, message: str) -> None:
    with pytest.raises(AuthError, match=re.escape(message)):
        parse_challenge(value)


def test_asterisk_challenge() -> None:
    c = parse_challenge('Digest algorithm=MD5, realm="asterisk", nonce="1690000000/abcd"')
    assert (c.realm, c.nonce, c.algorithm, c.qop, c.opaque, c.stale, c.proxy) == (
        "asterisk",
        "1690000000/abcd",
        "MD5",
        (),
        None,
        False,
        False,
    )


def test_fritzbox_challenge_defaults_to_md5_and_still_sends_algorithm() -> None:
    c = parse_challenge('Digest realm="fritz.box", nonce="ABCDEF0123456789"')
    assert (c.realm, c.nonce, c.algorithm, c.qop) == ("fritz.box", "ABCDEF0123456789", "MD5", ())
    value = DigestClient(Credentials("620", "pw"), cnonce_factory=never).authorize(
        c, "REGISTER", "sip:fritz.box"
    )
    params = parse_authorization(value)[0]
    assert params["algorithm"] == "MD5"
    assert "opaque" not in params


def test_kamailio_challenge() -> None:
    c = parse_challenge('Digest realm="127.0.0.1", nonce="ZWh1aWQ6OjE2OTAwMDAwMDA=", qop="auth"')
    assert (c.realm, c.nonce, c.algorithm, c.qop) == (
        "127.0.0.1",
        "ZWh1aWQ6OjE2OTAwMDAwMDA=",
        "MD5",
        ("auth",),
    )


def test_messy_whitespace_case_and_unknown_params() -> None:
    c = parse_challenge(
        '  digest   REALM = "sip.example" ,NONCE=abc123,qop = auth , Stale = TRUE ,'
        ' domain="sip:sip.example", userhash=true, Algorithm = sha-256-sess,opaque=xyz  '
    )
    assert c == Challenge(
        scheme="Digest",
        realm="sip.example",
        nonce="abc123",
        algorithm="SHA-256-SESS",
        qop=("auth",),
        opaque="xyz",
        stale=True,
        proxy=False,
    )


def test_params_without_spaces_or_commas() -> None:
    c = parse_challenge('Digest realm="r",nonce="n",qop="auth,auth-int"')
    assert (c.realm, c.nonce, c.qop) == ("r", "n", ("auth", "auth-int"))
    c = parse_challenge('Digest realm="r" nonce="n" opaque=""')
    assert (c.realm, c.nonce, c.opaque) == ("r", "n", "")


def test_quoted_pair_and_commas_inside_quotes() -> None:
    c = parse_challenge(r'Digest realm="a \"quoted\", realm", nonce="n,1"')
    assert c.realm == 'a "quoted", realm'
    assert c.nonce == "n,1"


def test_first_challenge_of_a_list_is_used() -> None:
    c = parse_challenge('Digest realm="r", nonce="n", Basic realm="other"')
    assert (c.realm, c.nonce) == ("r", "n")


# ---------------------------------------------------------------------------------------------
# Secrets never leak


def test_credentials_repr_hides_password() -> None:
    creds = Credentials("door", "hunter2-very-secret")
    for text in (repr(creds), str(creds), f"{creds}", repr(DigestClient(creds))):
        assert "hunter2" not in text
    assert "door" in repr(creds)


REGISTER = (
    "REGISTER sip:pbx.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "From: <sip:door@pbx.example>;tag=1928301774\r\n"
    "To: <sip:door@pbx.example>\r\n"
    "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    "CSeq: 2 REGISTER\r\n"
    'Subject: nonce="not-a-secret" response=kept\r\n'
    'Authorization: Digest username="door", realm="pbx.example", nonce="abc/def+123=",'
    ' uri="sip:pbx.example", response="6629fae49393a05397450978507c4ef1", algorithm=MD5,'
    ' cnonce="0a4f113b", qop=auth, nc=00000001, opaque="5ccc069c"\r\n'
    'proxy-authorization:Digest USERNAME="door",REALM="p",NONCE=n1,URI="sip:x",\r\n'
    " RESPONSE = deadbeef,CNONCE=c1\r\n"
    "Contact: <sip:door@192.0.2.10:5060>\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def test_mask_secrets_on_register() -> None:
    masked = mask_secrets(REGISTER)
    expected = (
        REGISTER.replace('nonce="abc/def+123="', 'nonce="***"')
        .replace('response="6629fae49393a05397450978507c4ef1"', 'response="***"')
        .replace('cnonce="0a4f113b"', 'cnonce="***"')
        .replace("NONCE=n1", "NONCE=***")
        .replace("RESPONSE = deadbeef", "RESPONSE = ***")
        .replace("CNONCE=c1", "CNONCE=***")
    )
    assert masked == expected
    for secret in ("abc/def+123=", "6629fae4", "0a4f113b", "n1,", "deadbeef", "c1\r"):
        assert secret not in masked
    for kept in ('username="door"', 'realm="pbx.example"', 'uri="sip:pbx.example"', "nc=00000001"):
        assert kept in masked
    assert 'Subject: nonce="not-a-secret" response=kept' in masked


def test_mask_secrets_challenges_and_quoted_lookalikes() -> None:
    text = (
        "SIP/2.0 401 Unauthorized\n"
        'WWW-Authenticate: Digest realm="r", nonce="n0nce", qop="auth"\n'
        'Proxy-Authenticate: Digest realm="r", nonce=bare, opaque="nonce=keep"\n'
        'Authorization: Digest username="cnonce=me", response="r1"\n'
        "\n"
        "nonce=body-text\n"
    )
    assert mask_secrets(text) == (
        "SIP/2.0 401 Unauthorized\n"
        'WWW-Authenticate: Digest realm="r", nonce="***", qop="auth"\n'
        'Proxy-Authenticate: Digest realm="r", nonce=***, opaque="nonce=keep"\n'
        'Authorization: Digest username="cnonce=me", response="***"\n'
        "\n"
        "nonce=body-text\n"
    )


def test_mask_secrets_unclosed_quote() -> None:
    # An unclosed quote runs to the end of the line: masked when a secret's name is inside it.
    assert mask_secrets('Authorization: Digest opaque="o, response=deadbeef\r\nX: y\r\n') == (
        'Authorization: Digest opaque="***\r\nX: y\r\n'
    )
    # Quotes pair up as the grammar reads them: here "nonce=" is inside the realm's quotes.
    text = 'WWW-Authenticate: Digest realm="r, nonce="abc", x="y"\n'
    assert mask_secrets(text) == text


def test_mask_secrets_leaves_other_text_identical() -> None:
    text = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKnonce=1\r\n\r\nbody"
    assert mask_secrets(text) == text
    assert mask_secrets("") == ""
