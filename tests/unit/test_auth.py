"""Client keys (core.auth): who is calling, which models it may use, and the open-relay rule."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import auth as auth_module
from core.auth import (
    ANONYMOUS,
    Client,
    ClientAuth,
    ClientKey,
    authorize,
    exposure_problem,
    is_loopback,
    key_problem,
    presented_keys,
)
from core.errors import ProxyError, anthropic_error_body, openai_error_body

ALICE_KEY = "sk-proxy-alice-4f9c2e7a1b"
BOB_KEY = "sk-proxy-bob-8d3a0c5e62"
CAROL_KEY = "sk-proxy-carol-19be77f0d4"


def sha256_form(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def table() -> ClientAuth:
    return ClientAuth(keys=(
        ClientKey.parse(ALICE_KEY, Client("alice", models=("gpt-4o*", "claude-sonnet-*"))),
        ClientKey.parse(sha256_form(BOB_KEY), Client("bob")),  # stored as a digest only
        ClientKey.parse(CAROL_KEY, Client("carol", models=("mock",), requests_per_minute=5)),
    ))


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())]


def api_key(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"anthropic-version", b"2023-06-01"), (b"x-api-key", key.encode())]


# -- authenticate ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [bearer(ALICE_KEY), api_key(ALICE_KEY)], ids=["bearer", "x-api-key"])
def test_a_key_is_accepted_from_either_header(headers):
    client = table().authenticate(headers)
    assert client == Client("alice", models=("gpt-4o*", "claude-sonnet-*"))


def test_a_key_configured_as_its_sha256_digest_is_accepted():
    assert table().authenticate(bearer(BOB_KEY)).name == "bob"
    assert table().authenticate(api_key(BOB_KEY)).name == "bob"


@pytest.mark.parametrize("value", [b"bearer " + ALICE_KEY.encode(), b"BEARER   " + ALICE_KEY.encode() + b"  ",
                                   b"  Bearer " + ALICE_KEY.encode()])
def test_the_bearer_scheme_is_case_insensitive_and_whitespace_tolerant(value):
    # RFC 9110 §11.1: auth-scheme names are case-insensitive.
    assert table().authenticate([(b"authorization", value)]).name == "alice"


def test_missing_key_is_a_401_that_says_how_to_send_one():
    for headers in ([], [(b"authorization", b"Basic YWxpY2U6c2VjcmV0")], [(b"authorization", b"Bearer ")],
                    [(b"x-api-key", b"")]):
        err = table().authenticate(headers)
        assert isinstance(err, ProxyError) and err.status == 401
        assert "Authorization: Bearer" in err.message and "x-api-key" in err.message


def test_wrong_key_is_a_401_in_each_protocol_shape():
    err = table().authenticate(bearer(ALICE_KEY + "x"))
    assert isinstance(err, ProxyError) and err.status == 401 and err.message == "invalid API key"
    assert openai_error_body(err)["error"]["code"] == "invalid_api_key"
    assert anthropic_error_body(err) == {"type": "error", "error": {"type": "authentication_error",
                                                                     "message": "invalid API key"}}
    assert err.should_retry is False  # retrying cannot fix a wrong key


def test_either_header_may_carry_the_valid_key():
    # Claude Code with both ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN set sends both.
    headers = [(b"x-api-key", b"sk-stale-placeholder"), (b"authorization", f"Bearer {BOB_KEY}".encode())]
    assert table().authenticate(headers).name == "bob"


def test_only_the_first_header_of_each_kind_is_tried():
    headers = [(b"x-api-key", b"guess-1"), (b"x-api-key", ALICE_KEY.encode())]
    assert presented_keys(headers) == [b"guess-1"]
    assert isinstance(table().authenticate(headers), ProxyError)


def test_without_keys_everyone_is_anonymous_and_may_use_everything():
    assert ClientAuth().authenticate([]) is ANONYMOUS
    assert ClientAuth().authenticate(bearer("anything")) is ANONYMOUS
    assert ANONYMOUS.may_use("gpt-4o") and not ClientAuth().required


@pytest.mark.parametrize("which", [ALICE_KEY, BOB_KEY, CAROL_KEY, "sk-nobody"])
def test_every_key_is_compared_whichever_matches(monkeypatch, which):
    """No early exit: the work (and time) does not depend on which key matched, if any."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    table().authenticate(bearer(which))
    assert len(calls) == 3
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests, never the raw key


@settings(max_examples=60)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80))
def test_plain_and_sha256_forms_of_a_key_accept_exactly_the_same_requests(key):
    plain = ClientAuth(keys=(ClientKey.parse(key, Client("k")),))
    hashed = ClientAuth(keys=(ClientKey.parse(sha256_form(key), Client("k")),))
    for headers in (bearer(key), api_key(key), bearer(key + "!")):
        assert outcome(plain.authenticate(headers)) == outcome(hashed.authenticate(headers))
    assert outcome(plain.authenticate(bearer(key))) == "k"


def outcome(verdict: Client | ProxyError) -> str | int:
    return verdict.name if isinstance(verdict, Client) else verdict.status


# -- authorize and the models list ---------------------------------------------------------------


def test_the_allow_list_matches_globs_case_sensitively():
    alice = table().authenticate(bearer(ALICE_KEY))
    assert authorize(alice, "gpt-4o") is None and authorize(alice, "gpt-4o-mini") is None
    assert authorize(alice, "claude-sonnet-4-5") is None
    for model in ("gpt-3.5-turbo", "claude-opus-4", "GPT-4o", "o1"):
        err = authorize(alice, model)
        assert isinstance(err, ProxyError) and err.status == 403
        assert model in err.message and err.param == "model"
        assert anthropic_error_body(err)["error"]["type"] == "permission_error"


def test_a_key_without_models_may_use_every_model():
    bob = table().authenticate(bearer(BOB_KEY))
    assert all(bob.may_use(name) for name in ("gpt-4o", "claude-sonnet-4-5", "anything/at:all"))


def test_an_empty_allow_list_is_refused():
    with pytest.raises(ValueError):
        Client("nobody", models=())


# -- the table ---------------------------------------------------------------------------------


def test_names_and_keys_are_unique():
    with pytest.raises(ValueError, match="unique"):
        ClientAuth(keys=(ClientKey.parse("k-1", Client("a")), ClientKey.parse("k-2", Client("a"))))
    with pytest.raises(ValueError, match="twice"):
        ClientAuth(keys=(ClientKey.parse("k-1", Client("a")), ClientKey.parse(sha256_form("k-1"), Client("b"))))


def test_allow_unauthenticated_with_keys_is_contradictory():
    with pytest.raises(ValueError, match="no effect"):
        ClientAuth(keys=(ClientKey.parse("k-1", Client("a")),), allow_unauthenticated=True)


@pytest.mark.parametrize(("value", "problem"), [
    ("", "empty"),
    ("sha256:abc", "64 hexadecimal"),
    ("sha256:" + "g" * 64, "64 hexadecimal"),
    ("two words", "printable ASCII"),
    ("caf\u00e9", "printable ASCII"),
])
def test_key_problems(value, problem):
    assert problem in key_problem(value)
    with pytest.raises(ValueError):
        ClientKey.parse(value, Client("x"))


def test_plain_keys_are_kept_for_redaction_only_and_never_shown():
    auth = table()
    assert auth.secrets() == frozenset({ALICE_KEY, CAROL_KEY})  # bob's plain value was never configured
    shown = repr(auth)
    assert ALICE_KEY not in shown and BOB_KEY not in shown and "alice" in shown


# -- the open-relay rule -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LocalHost",
                                  "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "192.168.1.20", "172.17.0.2", "fe80::1",
                                  "proxy.internal", "localhost.example.com", "", "128.0.0.1"])
def test_non_loopback_addresses(host):
    assert not is_loopback(host)


def test_no_keys_on_a_public_address_is_an_open_relay_unless_allowed():
    problem = exposure_problem("0.0.0.0", ClientAuth())
    assert "server.auth.keys" in problem and "server.auth.allow_unauthenticated: true" in problem
    assert "'0.0.0.0'" in problem
    assert exposure_problem("0.0.0.0", ClientAuth(allow_unauthenticated=True)) is None
    assert exposure_problem("0.0.0.0", table()) is None
    assert exposure_problem("127.0.0.1", ClientAuth()) is None
