"""Redaction that fails closed: no configured secret reaches a log line or an audit record.

Theory of operation: a `Redactor` is built once, when the configuration is
loaded, from three inputs: the secret *values* (`core.config.secrets(config)`:
backend keys, forced credential headers; client keys once auth exists), the
extra header *names* to blank, and extra JSONPaths to blank in bodies.  It then
offers one scrubbing call per shape of data:

* `text(s)`: every occurrence of every secret, in every form an encoder may
  have given it, becomes ``[redacted]``.  This is the last step before anything
  is written (`io_trio.logs_context.RedactingFormatter` runs it on each whole
  formatted log line, traceback included; the audit writer on each JSONL line).
* `headers(pairs)`: the values of credential headers (`SECRET_HEADERS` plus the
  configured names) are replaced whatever they hold; other values go through
  `text`.
* `body(value)`: configured JSONPaths are blanked, then every string (keys
  included) goes through `text`.
* `url(u)`: userinfo is dropped, credential-like query parameters are blanked
  (``?key=``, ``?api-key=``...), then `text`.

"Every form": a secret is searched for as itself and as a JSON string body
(``ensure_ascii`` on and off, ``/`` escaped or not, ``\\uXXXX`` in either case),
a JSON string inside a JSON string (tool arguments, or a body logged inside a
log line), Python ``repr`` of the str and of its UTF-8 bytes (exception text,
``%r`` log arguments, h11's byte headers), UTF-8 bytes decoded as Latin-1
(header values), and percent-encoding (query strings).  All forms go into one
compiled alternation, longest first, so a secret that contains another is
replaced whole.

Failing closed: a replacement can, in contrived cases, create a new occurrence
(a secret that overlaps the marker text).  `text` therefore checks its output
and, if any form is still present, returns the marker alone instead of the
text; if the marker itself contains a secret, it returns ``""``.

No minimum length: a short secret is redacted like any other, which can blank
innocent text that happens to contain it (a 4-character key would hit every
word containing those 4 letters).  `short_secrets` counts them so the adapter
can warn at start-up; the values themselves are never logged.

Defence in depth, on by default (`key_shapes`): strings shaped like well-known
vendor keys (``sk-...``, ``sk-ant-...``, ``AIza...``) and ``Bearer``/``Basic``
credentials in free text are blanked even when not configured, since a client's
own key can reach an error message.  Base64 or other re-encodings of a key at an
arbitrary offset cannot be searched for and are not covered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit, urlunsplit

import attrs
from jsonpath_ng import JSONPath
from jsonpath_ng.ext import parse as parse_jsonpath

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_QUERY_PARAMS",
    "MIN_SAFE_SECRET_LENGTH",
    "Redactor",
    "secrets_in_config_text",
    "strip_userinfo",
]

REDACTED = "[redacted]"
# Credential-bearing headers, request and response side (RFC 9110 §11.6.2
# Authorization, §11.7.2 Proxy-Authorization; RFC 6265 Cookie/Set-Cookie;
# vendor key headers: Anthropic x-api-key, Azure OpenAI api-key).
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
# Query parameters that carry keys by convention (Gemini ``key``, Azure ``api-key``,
# OAuth ``access_token``).
SECRET_QUERY_PARAMS = frozenset(
    {"key", "api_key", "api-key", "apikey", "token", "access_token", "auth", "password", "secret", "sig"}
)
MIN_SAFE_SECRET_LENGTH = 8

# Vendor key prefixes (OpenAI ``sk-``/``sk-proj-``, Anthropic ``sk-ant-``, Google
# ``AIza``) and HTTP auth schemes (RFC 6750 ``Bearer``, RFC 7617 ``Basic``) followed
# by a long token: the token is blanked, the prefix kept so the log stays readable.
_KEY_SHAPES = re.compile(r"\b(sk-|AIza|[Bb]earer |Basic )([A-Za-z0-9._~+/\-]{16,}=*)")
_KEY_SHAPE_HINTS = ("sk-", "AIza", "earer ", "Basic ")  # cheap test before the regex


def _json_bodies(value: str) -> set[str]:
    """`value` as the inside of a JSON string literal, as common encoders write it."""
    plain = json.dumps(value, ensure_ascii=False)[1:-1]
    ascii_ = json.dumps(value, ensure_ascii=True)[1:-1]
    upper_hex = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), ascii_)
    forms = {plain, ascii_, upper_hex}
    return forms | {form.replace("/", "\\/") for form in forms}


def _reprs(value: str) -> set[str]:
    """Python ``repr`` bodies of the str and of its UTF-8 bytes, either quote style."""
    forms = {repr(value)[1:-1], repr(value.encode("utf-8", "surrogatepass"))[2:-1]}
    # repr picks double quotes when the text holds a single quote; a formatter
    # that forces one style escapes the other.
    forms.add(repr(value + "'\"")[1:-4])
    return forms


def _percent(value: str) -> set[str]:
    encoded = {quote(value, safe=""), quote_plus(value, safe=""), quote(value)}
    return encoded | {re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), e) for e in encoded}


def _forms(secret: str) -> set[str]:
    """Every spelling of `secret` that an encoder on the way to a log may produce."""
    forms = {secret, secret.encode("utf-8", "surrogatepass").decode("latin-1")}
    for _ in range(2):  # a JSON string inside a JSON string
        forms |= {escaped for form in forms for escaped in _json_bodies(form)}
    forms |= _reprs(secret) | _percent(secret)
    forms.discard("")
    return forms


def strip_userinfo(url: str) -> str:
    """`url` without ``user:password@`` (RFC 3986 §3.2.1 deprecates passwords in URLs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _blank_param(part: str) -> str:
    """``key=v`` -> ``key=[redacted]`` for credential-like names; other parts unchanged."""
    name, sep, _ = part.partition("=")
    return f"{name}={REDACTED}" if sep and unquote_plus(name).lower() in SECRET_QUERY_PARAMS else part


def _compile_paths(paths: Iterable[str]) -> tuple[JSONPath, ...]:
    return tuple(parse_jsonpath(path) for path in paths)


def _alternation(secrets: frozenset[str]) -> re.Pattern[str] | None:
    forms = {form for secret in secrets for form in _forms(secret)}
    if not forms:
        return None
    ordered = sorted(forms, key=lambda form: (-len(form), form))  # longest first
    return re.compile("|".join(map(re.escape, ordered)))


@attrs.frozen
class Redactor:
    """See the module docstring.  Build once per configuration; immutable and thread-safe."""

    secrets: frozenset[str] = attrs.field(
        default=frozenset(), converter=lambda values: frozenset(v for v in values if v), repr=False
    )
    header_names: frozenset[str] = attrs.field(
        default=frozenset(), converter=lambda names: SECRET_HEADERS | {n.lower() for n in names}
    )
    body_paths: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    key_shapes: bool = True
    _pattern: re.Pattern[str] | None = attrs.field(init=False, repr=False, eq=False)
    _paths: tuple[JSONPath, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # jsonpath-ng raises on a bad path: the config reader reports it first.
        object.__setattr__(self, "_pattern", _alternation(self.secrets))
        object.__setattr__(self, "_paths", _compile_paths(self.body_paths))

    @property
    def short_secrets(self) -> int:
        """How many secrets are shorter than `MIN_SAFE_SECRET_LENGTH` (false positives likely)."""
        return sum(1 for secret in self.secrets if len(secret) < MIN_SAFE_SECRET_LENGTH)

    def merged(self, other: Redactor) -> Redactor:
        """A redactor that blanks what either blanks (several apps in one process)."""
        return Redactor(
            secrets=self.secrets | other.secrets,
            header_names=self.header_names | other.header_names,
            body_paths=(*self.body_paths, *(p for p in other.body_paths if p not in self.body_paths)),
            key_shapes=self.key_shapes or other.key_shapes,
        )

    # -- text ----------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """`value` with every secret form replaced; the last step before any write."""
        out = value
        if self._pattern is not None:
            out = self._pattern.sub(REDACTED, out)
        if self.key_shapes and any(hint in out for hint in _KEY_SHAPE_HINTS):
            out = _KEY_SHAPES.sub(r"\1" + REDACTED, out)
        if out is value or not self._leaks(out):
            return out
        return "" if self._leaks(REDACTED) else REDACTED

    def _leaks(self, value: str) -> bool:
        return self._pattern is not None and self._pattern.search(value) is not None

    def url(self, url: str) -> str:
        """A URL fit for a log: no userinfo, no credential query values, no secrets."""
        url = strip_userinfo(url)
        try:
            parts = urlsplit(url)
        except ValueError:
            return self.text(url)
        if parts.query:
            query = "&".join(_blank_param(part) for part in parts.query.split("&"))
            url = urlunsplit(parts._replace(query=query))
        return self.text(url)

    # -- structures ----------------------------------------------------------------------

    def headers(self, headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> list[tuple[str, str]]:
        """Header pairs with credential values blanked and the rest scrubbed."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return [
            (self.text(name), REDACTED if name.lower() in self.header_names else self.text(value))
            for name, value in pairs
        ]

    def body(self, value: Any) -> Any:
        """A JSON value with configured paths blanked and every string scrubbed (a new value)."""
        value = self.scrub(value)
        for path in self._paths:
            try:
                value = path.update(value, REDACTED)
            except Exception:  # noqa: BLE001 - jsonpath-ng on a shape it did not expect
                return REDACTED  # fail closed: the body cannot be shown safely
        return value

    def scrub(self, value: Any) -> Any:
        """Every string in a JSON-like value (keys too) through `text`; a new value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(key)): self.scrub(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(item) for item in value]
        return value


# -- the configuration text, before a Config exists ----------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|AUTH|CREDENTIAL|COOKIE", re.IGNORECASE)
_LITERAL = re.compile(
    r"""["']?(?:api[_-]?key|authorization|proxy-authorization|x-api-key|cookie)["']?\s*:\s*"""
    r"""["']?([^"'\s,}#][^"',}#\n]*)""",
    re.IGNORECASE,
)


def secrets_in_config_text(text: str, env: Mapping[str, str]) -> frozenset[str]:
    """Secrets a configuration *text* may hold, found without parsing or validating it.

    For scrubbing the error message of a configuration that failed to load
    (there is no `Config` to ask `core.config.secrets`).  Heuristic, and
    generous on purpose: the values of environment variables it references whose
    names look secret (``*KEY*``, ``*TOKEN*``, ``*SECRET*``...), and literal values
    written after ``api_key:``, ``authorization:``, ``x-api-key:`` or ``cookie:``,
    whole and as their last word (``Bearer <token>``).
    """
    found: set[str] = set()
    for name in _VARIABLE.findall(text):
        if _SECRET_NAME.search(name) and env.get(name, "").strip():
            found.update({env[name], env[name].strip()})
    for match in _LITERAL.finditer(text):
        literal = match.group(1).strip()
        if literal and not literal.startswith("${"):
            found.update({literal, literal.split()[-1]})
    return frozenset(value for value in found if value)
