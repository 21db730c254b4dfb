"""The first look at a client's body."""

from __future__ import annotations

import pytest

from core.errors import ProxyError
from core.requests import parse_client_body


def test_parses_once_and_returns_the_model():
    body, model = parse_client_body(b'{"model": "gpt-4o", "messages": [], "stream": true}')
    assert model == "gpt-4o"
    assert body == {"model": "gpt-4o", "messages": [], "stream": True}


@pytest.mark.parametrize(("raw", "needle", "param"), [
    (b"", "empty", None),
    (b"{", "not valid JSON", None),
    (b"\xff\xfe", "UTF-8", None),
    (b"null", "JSON object", None),
    (b'"text"', "JSON object", None),
    (b"{}", "'model'", "model"),
    (b'{"model": ""}', "'model'", "model"),
    (b'{"model": ["a"]}', "'model'", "model"),
    (b'{"model": "m", "stream": "yes"}', "'stream'", "stream"),
])
def test_bad_bodies_are_400s_that_say_what_is_wrong(raw, needle, param):
    with pytest.raises(ProxyError) as caught:
        parse_client_body(raw)
    assert caught.value.status == 400
    assert needle in caught.value.message
    assert caught.value.param == param
