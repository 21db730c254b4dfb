"""Redaction fails closed: no configured secret survives, in any spelling, anywhere."""

from __future__ import annotations

import json
import logging
import sys
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.audit import audit_line
from core.redact import REDACTED, SECRET_HEADERS, Redactor, secrets_in_config_text, strip_userinfo
from io_trio.logs_context import RedactingFormatter

KEY = "sk-upstream-secret-0123456789"
ODD_KEY = 'k3y/with"quote\\slash-é-漢字-\x01'


# -- by name -----------------------------------------------------------------------------------


def test_credential_headers_are_blanked_whatever_their_value() -> None:
    redactor = Redactor()
    headers = [("Authorization", "Bearer whatever"), ("X-Api-Key", "k"), ("api-key", "k"), ("Cookie", "a=b"),
               ("set-cookie", "s=1"), ("Proxy-Authorization", "Basic Zm9v"), ("content-type", "application/json")]
    out = dict(redactor.headers(headers))
    assert {name.lower() for name, value in out.items() if value == REDACTED} == SECRET_HEADERS
    assert out["content-type"] == "application/json"


def test_configured_extra_header_names_are_blanked_case_insensitively() -> None:
    redactor = Redactor(header_names=["X-Tenant-Token"])
    assert redactor.headers({"x-tenant-token": "t-1", "x-other": "fine"}) == [
        ("x-tenant-token", REDACTED), ("x-other", "fine")]


def test_a_secret_in_an_ordinary_header_is_blanked_by_value() -> None:
    redactor = Redactor(secrets=[KEY])
    assert redactor.headers([("x-debug", f"key was {KEY}")]) == [("x-debug", f"key was {REDACTED}")]


# -- by value, in every encoding --------------------------------------------------------------


@pytest.mark.parametrize("spelling", [
    lambda s: s,
    lambda s: json.dumps(s),
    lambda s: json.dumps(s, ensure_ascii=False),
    lambda s: json.dumps(json.dumps(s)),  # a JSON string inside a JSON string (tool arguments)
    lambda s: json.dumps(s).replace("/", "\\/"),  # PHP/JS encoders escape the solidus
    lambda s: repr(s),
    lambda s: repr(s.encode()),  # h11 puts byte headers in its exception text
    lambda s: quote(s, safe=""),
    lambda s: s.encode().decode("latin-1"),  # a UTF-8 header value decoded as Latin-1
], ids=["raw", "json", "json-utf8", "json-in-json", "json-slash", "repr", "bytes-repr", "percent", "latin1"])
def test_every_encoder_spelling_of_a_secret_is_blanked(spelling) -> None:
    redactor = Redactor(secrets=[ODD_KEY, KEY])
    for secret in (ODD_KEY, KEY):
        text = f"before {spelling(secret)} after"
        out = redactor.text(text)
        assert spelling(secret) not in out
        assert out.startswith("before ") and out.endswith(" after")


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    redactor = Redactor(secrets=["abcdefgh", "abcdefgh-ijklmnop"])
    assert redactor.text("x abcdefgh-ijklmnop y") == f"x {REDACTED} y"


def test_text_without_secrets_is_returned_unchanged() -> None:
    redactor = Redactor(secrets=[KEY])
    text = "POST /v1/messages 200 in 12 ms"
    assert redactor.text(text) is text


def test_short_secrets_are_still_redacted_and_counted() -> None:
    # Documented risk: a short key blanks innocent text that contains it.
    redactor = Redactor(secrets=["abc1", KEY])
    assert redactor.short_secrets == 1
    assert redactor.text("xabc1y") == f"x{REDACTED}y"


def test_a_secret_overlapping_the_marker_fails_closed() -> None:
    # "ed]" + "tail" only exists after "[redacted]" was inserted before "tail".
    redactor = Redactor(secrets=["SECRET", "ed]tail"], key_shapes=False)
    out = redactor.text("SECRETtail")
    assert "SECRET" not in out and "ed]tail" not in out


def test_a_secret_inside_the_marker_itself_leaves_nothing() -> None:
    redactor = Redactor(secrets=["dact"], key_shapes=False)
    assert redactor.text("the dact value") == ""


def test_repr_does_not_show_secrets() -> None:
    assert KEY not in repr(Redactor(secrets=[KEY]))


def test_merged_redactor_covers_both() -> None:
    merged = Redactor(secrets=["first-secret-1"]).merged(Redactor(secrets=["second-secret-2"], header_names=["x-t"]))
    assert merged.text("first-secret-1 second-secret-2") == f"{REDACTED} {REDACTED}"
    assert merged.headers([("x-t", "v")]) == [("x-t", REDACTED)]


# -- key shapes (defence in depth) -------------------------------------------------------------


def test_unconfigured_vendor_keys_and_bearer_tokens_are_blanked() -> None:
    redactor = Redactor()
    text = ("Incorrect API key provided: sk-proj-AbCdEfGhIjKlMnOpQrStUvWx; "
            "sent Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig and AIzaSyA-1234567890abcdefghijklmnopqrstu")
    out = redactor.text(text)
    assert "AbCdEfGhIjKlMnOpQrStUvWx" not in out and "eyJhbGciOiJIUzI1NiJ9" not in out and "AIzaSyA" not in out
    assert "sk-[redacted]" in out and "Bearer [redacted]" in out


def test_key_shapes_leave_ordinary_words_alone() -> None:
    redactor = Redactor()
    text = "ask-me-anything task-0123456789abcdefghijk Bearer tokens are short"
    assert redactor.text(text) == text


def test_key_shapes_can_be_turned_off() -> None:
    text = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx"
    assert Redactor(key_shapes=False).text(text) == text


# -- URLs and bodies ---------------------------------------------------------------------------


def test_url_loses_userinfo_and_credential_query_values() -> None:
    redactor = Redactor(secrets=[KEY])
    url = f"https://user:{KEY}@example.test/v1/chat?key=AIzaValue&api%2Dkey=v2&alt=sse&token={KEY}"
    out = redactor.url(url)
    assert out == f"https://example.test/v1/chat?key={REDACTED}&api%2Dkey={REDACTED}&alt=sse&token={REDACTED}"


def test_strip_userinfo_keeps_everything_else() -> None:
    assert strip_userinfo("http://a:b@host:8080/p?q=1#f") == "http://host:8080/p?q=1#f"
    assert strip_userinfo("http://host/p") == "http://host/p"


def test_body_blanks_configured_paths_and_secret_values_in_keys_and_values() -> None:
    redactor = Redactor(secrets=[KEY], body_paths=["$.metadata.user_id", "$.messages[*].content"])
    body = {"model": "gpt-4o", "metadata": {"user_id": "u-42"}, KEY: 1,
            "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": [{"type": "text"}]}],
            "tools": [{"function": {"arguments": json.dumps({"k": KEY})}}]}
    out = redactor.body(body)
    assert out["metadata"] == {"user_id": REDACTED}
    assert [m["content"] for m in out["messages"]] == [REDACTED, REDACTED]
    assert KEY not in json.dumps(out)
    assert body["metadata"]["user_id"] == "u-42"  # the caller's value is not modified


def test_body_path_that_does_not_match_changes_nothing() -> None:
    redactor = Redactor(body_paths=["$.a[0]", "$..content"])
    assert redactor.body({"a": {"not": "a list"}}) == {"a": {"not": "a list"}}
    assert redactor.body("plain text") == "plain text"


def test_body_path_that_fails_on_a_body_blanks_the_whole_body() -> None:
    # jsonpath-ng compiles the filter's regex only when it meets a value.
    redactor = Redactor(body_paths=['$.messages[?(@.role =~ "[")].content'])
    assert redactor.body({"messages": [{"role": "user", "content": "private"}]}) == REDACTED


# -- the configuration text, when no Config could be built -------------------------------------


def test_secrets_in_config_text_finds_env_keys_and_literals() -> None:
    text = (
        "models:\n  gpt:\n    api_key: ${OPENAI_API_KEY}\n    endpoint: ${BASE_URL}\n"
        "  claude:\n    api_key: sk-ant-literal-123\n    headers:\n      force:\n"
        "        authorization: Bearer tok-456\n"
    )
    env = {"OPENAI_API_KEY": "sk-from-env-789", "BASE_URL": "http://localhost:1"}
    found = secrets_in_config_text(text, env)
    assert {"sk-from-env-789", "sk-ant-literal-123", "tok-456"} <= found
    assert "http://localhost:1" not in found


def test_secrets_in_config_text_reads_json_too() -> None:
    found = secrets_in_config_text('{"models": {"m": {"api_key": "sk-json-1"}}}', {})
    assert "sk-json-1" in found


# -- properties ---------------------------------------------------------------------------------

secret_text = st.text(min_size=8, max_size=24).filter(lambda s: s.strip() == s and "\x00" not in s)
filler = st.text(max_size=20)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), filler)


def embedded(secret: str) -> st.SearchStrategy:
    """A JSON value with the secret placed in keys, values and mid-string, at any depth."""
    carrier = st.one_of(st.just(secret), st.builds(lambda a, b: a + secret + b, filler, filler))
    leaves = st.one_of(scalars, carrier)
    return st.recursive(leaves, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(filler, carrier), inner, max_size=4)), max_leaves=12)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), secret=secret_text)
def test_property_no_secret_survives_a_body_in_any_output(data, secret) -> None:
    redactor = Redactor(secrets=[secret])
    body = data.draw(embedded(secret))
    scrubbed = redactor.body(body)
    assert secret not in json.dumps(scrubbed, ensure_ascii=False)
    line = audit_line({"stages": {"client_request": {"headers": [], "body": body}}, "note": body}, redactor)
    assert secret not in line
    assert secret not in json.dumps(json.loads(line), ensure_ascii=False)


@settings(max_examples=150, deadline=None)
@given(secret=secret_text, before=filler, after=filler, name=st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True))
def test_property_no_secret_survives_headers_or_text(secret, before, after, name) -> None:
    redactor = Redactor(secrets=[secret])
    value = before + secret + after
    for _, out in redactor.headers([(name, value)]):
        assert secret not in out
    for text in (value, repr(value), json.dumps(value), json.dumps({"m": value}), quote(value, safe="")):
        assert secret not in redactor.text(text)


@settings(max_examples=100, deadline=None)
@given(secrets=st.lists(secret_text, min_size=1, max_size=4), words=st.lists(filler, max_size=6))
def test_property_several_secrets_interleaved(secrets, words) -> None:
    redactor = Redactor(secrets=secrets)
    text = "".join(w + s for w, s in zip(words + [""] * len(secrets), secrets))
    out = redactor.text(text)
    assert not any(secret in out for secret in secrets)


# -- the log formatter: the very last step -------------------------------------------------------


def test_formatter_redacts_the_message_its_arguments_and_the_traceback() -> None:
    redactor = Redactor(secrets=[KEY])
    formatter = RedactingFormatter(logging.Formatter("%(levelname)s %(message)s"), redactor)
    try:
        raise ValueError(f"upstream said: invalid key {KEY!r}")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "bad header %r", (KEY.encode(),),
                                   sys.exc_info())
    out = formatter.format(record)
    assert KEY not in out and "Traceback" in out and "ValueError" in out
