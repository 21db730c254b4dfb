"""Header policy (core.headers): each mode and each step, hop-by-hop, credentials, response side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.headers import (
    DEFAULT_POLICY,
    DEFAULT_RESPONSE_POLICY,
    HOP_BY_HOP_HEADERS,
    HeaderPolicy,
    managed_problem,
    name_problem,
    override,
    pattern_problem,
    value_problem,
)

CAPTURES = Path("/work/shared/reference/captures")


def _capture(file: str, index: int, fallback: dict[str, str]) -> list[tuple[str, str]]:
    try:
        return list(json.loads((CAPTURES / file).read_text())[index]["headers"].items())
    except (OSError, KeyError, IndexError, ValueError):
        return list(fallback.items())


# What openai-python 3.57 sends (captures/openai-python-3.57.0.json), with the original casing a
# client may use and a hop-by-hop header named by Connection.
OPENAI_CLIENT = [
    ("Host", "127.0.0.1:8080"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Connection", "keep-alive, X-Trace-Hop"),
    ("X-Trace-Hop", "1"),
    ("Authorization", "Bearer sk-client-key"),
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("User-Agent", "OpenAI/Python 3.57.0"),
    ("X-Stainless-Lang", "python"),
    ("X-Stainless-Retry-Count", "0"),
    ("OpenAI-Organization", "org-client"),
    ("Cookie", "session=abc"),
    ("Content-Length", "71"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Trailer", "x-checksum"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "h2c"),
    ("Proxy-Authorization", "Basic cHJveHk="),
    ("Proxy-Connection", "keep-alive"),
]
# What forwards under the default policy: everything else, lower-cased, in order.
OPENAI_FORWARDED = [
    ("accept-encoding", "gzip, deflate"),
    ("accept", "application/json"),
    ("content-type", "application/json"),
    ("user-agent", "OpenAI/Python 3.57.0"),
    ("x-stainless-lang", "python"),
    ("x-stainless-retry-count", "0"),
    ("openai-organization", "org-client"),
]


def names(headers: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in headers]


# -- step 1: always removed ------------------------------------------------------------------


def test_default_policy_removes_hop_by_hop_framing_and_credentials() -> None:
    assert DEFAULT_POLICY.apply(OPENAI_CLIENT) == OPENAI_FORWARDED


@pytest.mark.parametrize("mode", ["passthrough", "whitelist", "blacklist"])
def test_hop_by_hop_is_removed_in_every_mode_even_when_allowed(mode: str) -> None:
    policy = HeaderPolicy(mode=mode, allow=["*"] if mode == "whitelist" else [])
    out = names(policy.apply(OPENAI_CLIENT))
    for removed in ("host", "connection", "x-trace-hop", "content-length", "keep-alive", "te", "trailer",
                    "transfer-encoding", "upgrade", "proxy-authorization", "proxy-connection"):
        assert removed not in out


def test_every_name_listed_by_every_connection_header_is_removed() -> None:
    headers = [("connection", "X-A"), ("connection", " x-b ,close"), ("x-a", "1"), ("x-b", "2"), ("x-c", "3")]
    assert DEFAULT_POLICY.apply(headers) == [("x-c", "3")]


def test_http2_pseudo_headers_never_forward() -> None:
    assert DEFAULT_POLICY.apply([(":authority", "x"), (":path", "/v1"), ("accept", "*/*")]) == [("accept", "*/*")]


def test_real_claude_code_request() -> None:
    headers = _capture(
        "claude-code-2.1.197-tool-round-trip.json", 1, {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    )
    out = dict(DEFAULT_POLICY.apply(headers))
    assert "x-api-key" not in out and "host" not in out and "connection" not in out
    assert out["anthropic-version"] == "2023-06-01"
    if "anthropic-beta" in dict(headers):
        assert out["anthropic-beta"] == dict(headers)["anthropic-beta"]


# -- step 2: mode -----------------------------------------------------------------------------


def test_whitelist_keeps_only_allowed_names_with_globs_case_insensitively() -> None:
    policy = HeaderPolicy(mode="whitelist", allow=["Content-Type", "X-STAINLESS-*", "openai-?rganization"])
    assert policy.apply(OPENAI_CLIENT) == [
        ("content-type", "application/json"),
        ("x-stainless-lang", "python"),
        ("x-stainless-retry-count", "0"),
        ("openai-organization", "org-client"),
    ]


def test_whitelist_with_nothing_allowed_forwards_nothing_from_the_client() -> None:
    assert HeaderPolicy(mode="whitelist").apply(OPENAI_CLIENT) == []


def test_blacklist_removes_denied_globs() -> None:
    policy = HeaderPolicy(mode="blacklist", deny=["x-stainless-*", "User-Agent"])
    assert policy.apply(OPENAI_CLIENT) == [
        ("accept-encoding", "gzip, deflate"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("openai-organization", "org-client"),
    ]


def test_character_class_globs() -> None:
    policy = HeaderPolicy(mode="whitelist", allow=["x-[ab]"])
    assert policy.apply([("x-a", "1"), ("X-B", "2"), ("x-c", "3")]) == [("x-a", "1"), ("x-b", "2")]


# -- step 3: credentials ------------------------------------------------------------------------


def test_a_glob_never_lets_a_credential_through() -> None:
    policy = HeaderPolicy(mode="whitelist", allow=["*"])
    out = names(policy.apply(OPENAI_CLIENT))
    assert "authorization" not in out and "cookie" not in out
    assert "user-agent" in out


@pytest.mark.parametrize("credential", ["authorization", "x-api-key", "api-key", "cookie"])
def test_credentials_pass_only_when_allowed_by_exact_name(credential: str) -> None:
    headers = [(credential.upper(), "secret"), ("accept", "*/*")]
    assert HeaderPolicy(mode="whitelist", allow=["*", "a*"]).apply(headers) == [("accept", "*/*")]
    assert HeaderPolicy(mode="whitelist", allow=[credential.title()]).apply(headers) == [(credential, "secret")]
    # Outside whitelist mode, an exact credential name in allow is the opt-in too.
    assert HeaderPolicy(allow=[credential]).apply(headers) == [(credential, "secret"), ("accept", "*/*")]
    assert DEFAULT_POLICY.apply(headers) == [("accept", "*/*")]


def test_forced_credential_replaces_the_clients() -> None:
    policy = HeaderPolicy(force={"Authorization": "Bearer team-token"})
    out = policy.apply(OPENAI_CLIENT)
    assert [v for n, v in out if n == "authorization"] == ["Bearer team-token"]


def test_blacklist_deny_beats_an_allowed_credential() -> None:
    policy = HeaderPolicy(mode="blacklist", deny=["authorization"], allow=["authorization"])
    assert "authorization" not in names(policy.apply(OPENAI_CLIENT))


# -- step 4: drop, add, force --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            HeaderPolicy(drop=["x-stainless-*", "accept-encoding"]),
            [("accept", "application/json"), ("content-type", "application/json"),
             ("user-agent", "OpenAI/Python 3.57.0"), ("openai-organization", "org-client")],
        ),
        (   # add only sets absent headers; a present one keeps the client's value
            HeaderPolicy(mode="whitelist", allow=["user-agent"], add={"User-Agent": "proxy", "X-Team": "a"}),
            [("user-agent", "OpenAI/Python 3.57.0"), ("x-team", "a")],
        ),
        (   # force overrides (wherever the client put it) and sets when absent
            HeaderPolicy(mode="whitelist", allow=["user-agent", "openai-organization"],
                         force={"OpenAI-Organization": "org-pinned", "anthropic-beta": "tools-2024"}),
            [("user-agent", "OpenAI/Python 3.57.0"), ("openai-organization", "org-pinned"),
             ("anthropic-beta", "tools-2024")],
        ),
        (   # drop runs before add: dropping then adding replaces the value
            HeaderPolicy(mode="whitelist", allow=["user-agent"], drop=["user-agent"], add={"user-agent": "proxy/1"}),
            [("user-agent", "proxy/1")],
        ),
        (   # add then force on the same absent name: force wins
            HeaderPolicy(mode="whitelist", add={"x-a": "added"}, force={"x-a": "forced"}),
            [("x-a", "forced")],
        ),
        (   # blacklist + every step
            HeaderPolicy(mode="blacklist", deny=["x-stainless-*"], drop=["accept*"], add={"x-team": "a"},
                         force={"user-agent": "proxy"}),
            [("content-type", "application/json"), ("openai-organization", "org-client"),
             ("x-team", "a"), ("user-agent", "proxy")],
        ),
    ],
)
def test_drop_add_force(policy: HeaderPolicy, expected: list[tuple[str, str]]) -> None:
    assert policy.apply(OPENAI_CLIENT) == expected


def test_force_replaces_every_occurrence_of_a_repeated_header() -> None:
    policy = HeaderPolicy(force={"x-tag": "one"})
    assert policy.apply([("x-tag", "a"), ("accept", "*/*"), ("X-Tag", "b")]) == [("accept", "*/*"), ("x-tag", "one")]


def test_repeated_client_headers_are_kept_in_order() -> None:
    assert DEFAULT_POLICY.apply([("x-tag", "a"), ("X-Tag", "b")]) == [("x-tag", "a"), ("x-tag", "b")]


def test_verdicts_are_stable_across_requests() -> None:
    policy = HeaderPolicy(mode="blacklist", deny=["x-*"])
    first = policy.apply(OPENAI_CLIENT)
    assert policy.apply(OPENAI_CLIENT) == first
    assert policy.apply([(f"y-{i}", "v") for i in range(3000)])[-1] == ("y-2999", "v")  # past the memo bound


def test_the_callers_own_headers_replace_rather_than_duplicate() -> None:
    forwarded = DEFAULT_POLICY.apply(OPENAI_CLIENT)
    out = override(forwarded, [("content-type", "application/json"), ("accept-encoding", "identity"),
                               ("authorization", "Bearer sk-backend")])
    assert [v for n, v in out if n == "accept-encoding"] == ["identity"]
    assert [v for n, v in out if n == "content-type"] == ["application/json"]
    assert out[-3:] == [("content-type", "application/json"), ("accept-encoding", "identity"),
                        ("authorization", "Bearer sk-backend")]
    assert override(forwarded, []) is forwarded


# -- response side ----------------------------------------------------------------------------------

UPSTREAM_RESPONSE = [
    ("Date", "Tue, 01 Jul 2025 10:00:00 GMT"),
    ("Content-Type", "application/json"),
    ("Content-Length", "624"),
    ("Content-Encoding", "gzip"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "keep-alive"),
    ("x-request-id", "req_4f3c2a"),
    ("x-ratelimit-remaining-requests", "99"),
    ("retry-after", "1"),
    ("Set-Cookie", "__cf_bm=abc; path=/"),
    ("openai-processing-ms", "120"),
]


def test_response_side_removes_framing_and_set_cookie() -> None:
    # date/server describe the upstream's hop; the proxy's server writes its own
    assert DEFAULT_RESPONSE_POLICY.apply_response(UPSTREAM_RESPONSE + [("server", "nginx")]) == [
        ("content-type", "application/json"),
        ("x-request-id", "req_4f3c2a"),
        ("x-ratelimit-remaining-requests", "99"),
        ("retry-after", "1"),
        ("openai-processing-ms", "120"),
    ]


def test_response_side_keeps_authorization_and_can_allow_set_cookie() -> None:
    headers = [("authorization", "x"), ("set-cookie", "a=b")]
    assert DEFAULT_RESPONSE_POLICY.apply(headers) == [("authorization", "x")]
    assert HeaderPolicy(side="response", allow=["set-cookie"]).apply(headers) == headers


def test_response_side_whitelist_and_force() -> None:
    policy = HeaderPolicy(side="response", mode="whitelist", allow=["x-ratelimit-*", "retry-after"],
                          force={"x-served-via": "llm-proxy"})
    assert policy.apply(UPSTREAM_RESPONSE) == [
        ("x-ratelimit-remaining-requests", "99"), ("retry-after", "1"), ("x-served-via", "llm-proxy"),
    ]


def test_apply_response_refuses_a_request_policy() -> None:
    with pytest.raises(ValueError):
        DEFAULT_POLICY.apply_response(UPSTREAM_RESPONSE)


# -- construction checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "allowlist"},
        {"allow": ["bad name"]},
        {"drop": ["x:y"]},
        {"force": {"bad name": "v"}},
        {"force": {"x-a": "v\r\nx-injected: 1"}},
        {"add": {"x-a": "nul\x00"}},
        {"add": {"x-a": "caf\u00e9"}},
        {"force": {"Content-Length": "3"}},
        {"force": {"host": "evil"}},
        {"add": {"proxy-authorization": "x"}},
        {"force": {"transfer-encoding": "chunked"}},
        {"side": "response", "force": {"content-encoding": "gzip"}},
        {"force": [("x-a", "1"), ("X-A", "2")]},
    ],
)
def test_invalid_policies_are_refused_on_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        HeaderPolicy(**kwargs)  # type: ignore[arg-type]


def test_problem_helpers() -> None:
    assert name_problem("x-api-key") is None
    assert name_problem("x api") == "invalid header name 'x api'"
    assert pattern_problem("anthropic-*") is None and pattern_problem("x-[ab]") is None
    assert value_problem("Bearer abc\tdef") is None
    assert "CR/LF/NUL" in (value_problem("a\nb") or "")
    assert managed_problem("Content-Length", "request") == "content-length is managed by the proxy and cannot be set"
    assert managed_problem("content-length", "response") is not None
    assert managed_problem("host", "response") is None


def test_values_are_stripped_and_names_lower_cased() -> None:
    policy = HeaderPolicy(force={"X-Team": "  a b  "})
    assert policy.force == (("x-team", "a b"),)


def test_default_policies_are_default() -> None:
    assert DEFAULT_POLICY.is_default and DEFAULT_RESPONSE_POLICY.is_default
    assert not HeaderPolicy(drop=["x"]).is_default


# -- properties -------------------------------------------------------------------------------------

TOKEN = st.text(alphabet="abcxyzABCXYZ019-", min_size=1, max_size=12)
SPECIAL = st.sampled_from(
    ["Connection", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Authorization",
     "Proxy-Foo", "Host", "Content-Length", "Authorization", "Cookie", "X-Api-Key"]
)
NAME = st.one_of(TOKEN, SPECIAL).map(lambda n: "".join(c.upper() if i % 2 else c for i, c in enumerate(n)))
VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
HEADERS = st.lists(st.tuples(NAME, VALUE), max_size=25)
CONFIG_VALUE = st.text(max_size=12)  # anything a config could hold, CR/LF included


@st.composite
def policies(draw: st.DrawFn) -> HeaderPolicy:
    kwargs = {
        "mode": draw(st.sampled_from(["passthrough", "whitelist", "blacklist"])),
        "allow": draw(st.lists(st.one_of(TOKEN, SPECIAL, st.just("*")), max_size=3)),
        "drop": draw(st.lists(TOKEN, max_size=2)),
        "add": draw(st.dictionaries(st.one_of(TOKEN, SPECIAL), CONFIG_VALUE, max_size=2)),
        "force": draw(st.dictionaries(st.one_of(TOKEN, SPECIAL), CONFIG_VALUE, max_size=2)),
    }
    if kwargs["mode"] == "blacklist":
        kwargs["deny"] = draw(st.lists(st.one_of(TOKEN, st.just("x-*")), max_size=2))
    try:
        return HeaderPolicy(**kwargs)
    except ValueError:
        return DEFAULT_POLICY  # refused at load: the configuration never gets this far


@settings(max_examples=100)
@given(policies(), HEADERS)
def test_output_never_has_hop_by_hop_framing_or_crlf(policy: HeaderPolicy, headers: list[tuple[str, str]]) -> None:
    listed = {t.strip().lower() for n, v in headers if n.lower() == "connection" for t in v.split(",")}
    for name, value in policy.apply(headers):
        assert name == name.lower()
        assert name not in HOP_BY_HOP_HEADERS | {"host", "content-length"}
        assert not name.startswith("proxy-")
        assert name not in listed
        assert not any(c in value for c in "\r\n\x00")


@settings(max_examples=100)
@given(HEADERS)
def test_client_credentials_never_pass_the_default_policy(headers: list[tuple[str, str]]) -> None:
    out = names(DEFAULT_POLICY.apply(headers))
    assert not {"authorization", "cookie", "x-api-key", "api-key"} & set(out)
