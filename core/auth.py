"""Who is calling: client keys, per-key model allow-lists, and the open-relay guard.

Theory of operation: ``server.auth.keys`` is read once, at configuration load,
into a `ClientAuth` table of `ClientKey` entries.  A key is configured either as
its plain value (normally ``${VAR}``, so the file holds no secret) or as
``sha256:<hex>``; either way the table keeps only its SHA-256 digest for
matching.  Each key names a `Client`: the identity a request is served as
(its ``name`` goes to logs, the key itself never does), with an optional
``models`` allow-list of globs and an optional requests-per-minute budget.

`ClientAuth.authenticate` takes the request's headers, finds the presented key
(``Authorization: Bearer <key>``, as the OpenAI SDK and Anthropic's
``auth_token`` send it, or ``x-api-key: <key>``, as the Anthropic SDK sends it;
either works on every endpoint) and answers the `Client` or a 401 `ProxyError`.
The match is made on digests with `hmac.compare_digest`, against *every*
configured key, without stopping at the first match: the time taken does not
depend on which key matched or how much of it was right.  `authorize` then
answers 403 for a model outside the client's allow-list.

With no keys configured every request is served as `ANONYMOUS`.  That is only
safe on a loopback address: `exposure_problem` is the rule the loader (and
`llm-proxy serve --host`) applies, so a proxy that holds provider keys never
starts as an open relay unless ``allow_unauthenticated: true`` says so.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable

import attrs

from core.errors import ProxyError

__all__ = [
    "ANONYMOUS",
    "SHA256_PREFIX",
    "Client",
    "ClientAuth",
    "ClientKey",
    "authorize",
    "digest_of",
    "exposure_problem",
    "is_loopback",
    "key_problem",
    "presented_keys",
]

SHA256_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
# A key travels in a header: visible ASCII, no spaces (RFC 9110 §5.5, RFC 6750 §2.1 b64token is narrower still).
_KEY_TEXT = re.compile(r"[\x21-\x7e]+")
# Only the first key of each kind is considered: a request cannot make us hash
# and compare an unbounded number of guesses.
_MAX_CANDIDATES = 2


def digest_of(secret: str | bytes) -> bytes:
    """SHA-256 of a key as it is sent (UTF-8 for text)."""
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def key_problem(value: str) -> str | None:
    """Why `value` cannot be a configured key (plain, or ``sha256:<hex>``), or None."""
    if not value:
        return "is empty (is its environment variable set?)"
    if value.startswith(SHA256_PREFIX):
        if not _HEX_DIGEST.fullmatch(value[len(SHA256_PREFIX):]):
            return "a sha256: key must be followed by 64 hexadecimal digits (sha256sum of the key)"
        return None
    if not _KEY_TEXT.fullmatch(value):
        return "a key must be printable ASCII without spaces (it is sent in a header)"
    return None


def _compile_globs(patterns: tuple[str, ...] | None) -> re.Pattern[str] | None:
    if patterns is None:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@attrs.frozen
class Client:
    """Who a request is served as: a name for logs, what it may use, its budget.

    `models` holds globs matched case-sensitively against the model name the
    client sends (as routing does); None allows every model.
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    models: tuple[str, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple))
    requests_per_minute: int | None = None
    _allowed: re.Pattern[str] | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.models is not None and (not self.models or not all(self.models)):
            raise ValueError("models must be None (every model) or a non-empty list of non-empty globs")
        if self.requests_per_minute is not None and self.requests_per_minute < 1:
            raise ValueError("requests_per_minute must be >= 1")
        object.__setattr__(self, "_allowed", _compile_globs(self.models))

    def may_use(self, model: str) -> bool:
        return self._allowed is None or self._allowed.match(model) is not None


ANONYMOUS = Client("anonymous")


@attrs.frozen
class ClientKey:
    """One ``server.auth.keys`` entry: the key's digest and the client it names.

    `secret` is the plain value when the key was configured as one (never
    shown by repr, only kept so logs can be redacted); None for ``sha256:``.
    """

    client: Client
    digest: bytes = attrs.field(repr=False)
    secret: str | None = attrs.field(default=None, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.digest) != 32:
            raise ValueError("digest must be a SHA-256 digest (32 bytes)")

    @classmethod
    def parse(cls, value: str, client: Client) -> ClientKey:
        """From a configured value: the plain key, or ``sha256:<hex>``."""
        problem = key_problem(value)
        if problem:
            raise ValueError(f"invalid client key: {problem}")
        if value.startswith(SHA256_PREFIX):
            return cls(client, bytes.fromhex(value[len(SHA256_PREFIX):]))
        return cls(client, digest_of(value), secret=value)


def presented_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The keys a request presents: its first ``x-api-key`` and first Bearer token.

    `headers` are ASGI pairs (names lower-case).  The ``Bearer`` scheme name is
    case-insensitive (RFC 9110 §11.1); other schemes carry no key for us.
    """
    api_key = bearer = None
    for name, value in headers:
        if name == b"x-api-key" and api_key is None:
            api_key = value.strip()
        elif name == b"authorization" and bearer is None:
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                bearer = token.strip()
    return [key for key in (api_key, bearer) if key][:_MAX_CANDIDATES]


_MISSING_KEY = "no API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
_WRONG_KEY = "invalid API key"


@attrs.frozen
class ClientAuth:
    """``server.auth``: the client keys; none means every request is `ANONYMOUS`."""

    keys: tuple[ClientKey, ...] = attrs.field(default=(), converter=tuple)
    allow_unauthenticated: bool = False

    def __attrs_post_init__(self) -> None:
        names = [key.client.name for key in self.keys]
        if len(set(names)) != len(names):
            raise ValueError(f"client key names must be unique, got {names}")
        if len({key.digest for key in self.keys}) != len(self.keys):
            raise ValueError("the same client key is configured twice")
        if self.keys and self.allow_unauthenticated:
            raise ValueError("allow_unauthenticated has no effect when keys are configured")

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> Client | ProxyError:
        """The client a request is served as, or a 401 error to answer it with."""
        if not self.keys:
            return ANONYMOUS
        candidates = presented_keys(headers)
        if not candidates:
            return _unauthenticated(_MISSING_KEY)
        found = self._match(candidates)
        return found if found is not None else _unauthenticated(_WRONG_KEY)

    def _match(self, candidates: list[bytes]) -> Client | None:
        found: Client | None = None
        for candidate in candidates:
            digest = digest_of(candidate)
            for key in self.keys:
                # Every key is compared, and compare_digest first: no early exit
                # tells a caller which key (or how much of one) matched.
                if hmac.compare_digest(digest, key.digest) and found is None:
                    found = key.client
        return found

    def secrets(self) -> frozenset[str]:
        """The plain key values, for log redaction."""
        return frozenset(key.secret for key in self.keys if key.secret)


def _unauthenticated(message: str) -> ProxyError:
    # OpenAI answers a bad key with code "invalid_api_key" (protocols.md §1.5).
    return ProxyError(401, message, type="authentication_error", code="invalid_api_key", should_retry=False)


def authorize(client: Client, model: str) -> ProxyError | None:
    """None when `client` may use `model` (the name it sent), else a 403 error."""
    if client.may_use(model):
        return None
    return ProxyError(403, f"this API key may not use the model {model!r}", type="permission_error",
                      param="model", code="model_not_allowed", should_retry=False)


@functools.lru_cache(maxsize=64)
def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (also as ``[::1]`` or IPv4-mapped)."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name other than localhost may resolve anywhere
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def exposure_problem(host: str, auth: ClientAuth) -> str | None:
    """Why serving on `host` with `auth` would make an open relay, or None."""
    if auth.keys or auth.allow_unauthenticated or is_loopback(host):
        return None
    return (f"no client keys are configured and the proxy would listen on {host!r}, which is not a loopback "
            "address: anyone who can reach it could spend the backends' API keys. Configure server.auth.keys, "
            "or set server.auth.allow_unauthenticated: true if something else controls who can connect")
