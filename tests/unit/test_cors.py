"""CORS policy (core.cors): preflight answers and response headers, per the Fetch standard."""

from __future__ import annotations

import pytest

from core.cors import DEFAULT_EXPOSE_HEADERS, CorsPolicy, origin_problem

APP = "https://chat.example.com"


def test_preflight_for_an_allowed_origin_echoes_the_requested_headers():
    # What Chrome sends before the openai SDK's POST from a page on APP.
    policy = CorsPolicy(allow_origins=(APP, "http://localhost:5173"))
    headers = dict(policy.preflight(APP, "POST", "authorization, content-type, x-stainless-os"))
    assert headers["access-control-allow-origin"] == APP
    assert headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    # '*' would not cover Authorization (Fetch §3.2.3), so the list is echoed.
    assert headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    assert headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in headers
    varies = [v for k, v in policy.preflight(APP, "POST", "authorization") if k == "vary"]
    assert varies == ["Origin", "Access-Control-Request-Headers"]


def test_an_origin_not_listed_gets_no_cors_headers():
    policy = CorsPolicy(allow_origins=(APP,))
    assert policy.preflight("https://evil.example", "POST", "authorization") is None
    assert policy.response_headers("https://evil.example") == []
    assert policy.response_headers("https://chat.example.com.evil.example") == []


def test_origins_compare_as_browsers_serialise_them():
    policy = CorsPolicy(allow_origins=("HTTPS://Chat.Example.com/",))
    assert policy.allow_origins == (APP,)
    assert policy.allows(APP) and not policy.allows("http://chat.example.com")
    assert not policy.allows("https://chat.example.com:8443")


def test_response_headers_name_the_origin_and_expose_the_retry_hints():
    headers = CorsPolicy(allow_origins=(APP,)).response_headers(APP)
    assert headers == [("access-control-allow-origin", APP), ("vary", "Origin"),
                       ("access-control-expose-headers", ", ".join(DEFAULT_EXPOSE_HEADERS))]
    assert "retry-after" in DEFAULT_EXPOSE_HEADERS and "x-request-id" in DEFAULT_EXPOSE_HEADERS


def test_any_origin_without_credentials_is_a_literal_star_without_vary():
    policy = CorsPolicy(allow_origins=("*",), expose_headers=())
    assert policy.response_headers("https://anyone.example") == [("access-control-allow-origin", "*")]


def test_credentials_reflect_the_origin_and_never_go_with_star():
    policy = CorsPolicy(allow_origins=(APP,), allow_credentials=True, expose_headers=())
    assert policy.response_headers(APP) == [("access-control-allow-origin", APP), ("vary", "Origin"),
                                            ("access-control-allow-credentials", "true")]
    with pytest.raises(ValueError, match="credentials"):
        CorsPolicy(allow_origins=("*",), allow_credentials=True)


def test_explicit_header_and_method_lists_are_sent_as_configured():
    policy = CorsPolicy(allow_origins=(APP,), allow_headers=("Authorization", "Content-Type"),
                        allow_methods=("post",), max_age_seconds=0)
    headers = dict(policy.preflight(APP, "POST", "authorization, content-type, x-custom"))
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-max-age"] == "0"


@pytest.mark.parametrize("origin", ["*", APP, "http://localhost:3000", "http://127.0.0.1:8080",
                                    "chrome-extension://abcdefghijklmnop", APP + "/"])
def test_valid_origins(origin):
    assert origin_problem(origin) is None


@pytest.mark.parametrize("origin", ["chat.example.com", "https://chat.example.com/app", "https://",
                                    "https://a.example?x=1", "null", ""])
def test_invalid_origins(origin):
    assert "expected '*' or an origin" in origin_problem(origin)
    with pytest.raises(ValueError):
        CorsPolicy(allow_origins=(origin,))


def test_an_empty_origin_list_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        CorsPolicy(allow_origins=())
