"""Header policy: which client headers go upstream, and which upstream headers come back.

Theory of operation: a `HeaderPolicy` is built once, at configuration load, from a
model's ``headers:`` (request side) or ``response_headers:`` (response side) block.
`HeaderPolicy.apply` then runs on every request, in this order:

1. **Always removed**, whatever the configuration: hop-by-hop headers (RFC 9110
   §7.6.1: ``Connection`` and every name it lists, ``Keep-Alive``, ``TE``,
   ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``), HTTP/2
   pseudo-headers, and the framing headers the transport recomputes (request:
   ``Host``, ``Content-Length``; response: ``Content-Length``,
   ``Content-Encoding``, ``Transfer-Encoding``, because the adapter re-frames
   bodies).
2. **Mode**: ``passthrough`` keeps everything, ``whitelist`` keeps only names
   matching ``allow``, ``blacklist`` keeps everything except names matching
   ``deny`` (globs, case-insensitive).
3. **Credentials** (request: ``Authorization``, ``X-Api-Key``, ``Api-Key``,
   ``Cookie``; response: ``Set-Cookie``) are removed unless ``allow`` names them
   exactly (a glob such as ``*`` never lets a credential through; in passthrough
   and blacklist modes this is ``allow``'s only use) or ``force`` sets them.  The caller injects the backend's own credential afterwards
   (`override`, which replaces rather than appends).
4. ``drop`` removes, ``add`` sets a header only if absent, ``force`` sets it,
   replacing whatever the client sent.

Steps 1-3 and ``drop`` only remove headers, so they collapse into one verdict per
header name, computed once and remembered (bounded) for the next request.  The
default policy therefore costs one dict lookup per header.  Output names are
lower-case (HTTP/2 requires it, HTTP/1.1 does not care: RFC 9110 §5.1); the
relative order of the client's headers is kept, added then forced headers follow.

Names and values coming from the configuration are checked here (`name_problem`,
`value_problem`, `pattern_problem`, `managed_problem`) so the loader can report
them with their configuration path; the constructor runs the same checks.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_POLICY",
    "DEFAULT_RESPONSE_POLICY",
    "HOP_BY_HOP_HEADERS",
    "HeaderPolicy",
    "Mode",
    "Side",
    "managed_problem",
    "name_problem",
    "override",
    "pattern_problem",
    "value_problem",
]

Mode = Literal["passthrough", "whitelist", "blacklist"]
Side = Literal["request", "response"]
MODES: tuple[Mode, ...] = ("passthrough", "whitelist", "blacklist")

# RFC 9110 §7.6.1; "proxy-*" is handled as a prefix.
HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
# Plus the framing the transport recomputes for the body it actually sends.
_ALWAYS_REMOVED: Mapping[Side, frozenset[str]] = {
    "request": HOP_BY_HOP_HEADERS | {"host", "content-length"},
    # `date` and `server` describe the upstream's hop: hypercorn writes our own
    # (RFC 9110 §6.6.1 allows one Date).
    "response": HOP_BY_HOP_HEADERS | {"content-length", "content-encoding", "date", "server"},
}
CREDENTIAL_HEADERS: Mapping[Side, frozenset[str]] = {
    "request": frozenset({"authorization", "x-api-key", "api-key", "cookie"}),
    "response": frozenset({"set-cookie"}),
}

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_GLOB = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z?\[\]]+")  # token chars plus glob syntax
_BAD_VALUE_CHAR = re.compile(r"[^\t\x20-\x7e]")  # RFC 9110 §5.5, kept to printable ASCII
_GLOB_CHARS = frozenset("*?[")
_COMMON_CONNECTION_TOKENS = frozenset({"keep-alive", "close", "upgrade", "te", ""})
_MEMO_LIMIT = 1024  # distinct header names remembered per policy


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid header field name (RFC 9110 §5.6.2 token), or None."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        return f"invalid header name {name!r}"
    return None


def value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as a header value, or None.

    CR, LF and NUL would allow request smuggling (RFC 9110 §5.5); other control
    characters and non-ASCII text are refused by h11 when sending.
    """
    if not isinstance(value, str):
        return f"expected a string, got {value!r}"
    bad = _BAD_VALUE_CHAR.search(value)
    if bad:
        return f"invalid character {bad.group()!r} in header value (printable ASCII only, no CR/LF/NUL)"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a header name or glob (``x-*``, ``anthropic-?eta``), or None."""
    if not isinstance(pattern, str) or not _GLOB.fullmatch(pattern):
        return f"invalid header name or pattern {pattern!r}"
    return None


def managed_problem(name: str, side: Side) -> str | None:
    """Why `name` cannot be set by ``add``/``force`` on `side`, or None."""
    lname = name.lower()
    if lname in _ALWAYS_REMOVED[side] or lname.startswith("proxy-"):
        return f"{lname} is managed by the proxy and cannot be set"
    return None


def _lower_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(v.lower() for v in values)


def _header_items(items: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Lower-case names; strip values (RFC 9110 §5.5: surrounding whitespace is not part of a value)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    return tuple(
        (name.lower() if isinstance(name, str) else name, value.strip(" \t") if isinstance(value, str) else value)
        for name, value in pairs
    )


@attrs.frozen
class _Globs:
    """Names matched exactly by a hash lookup, real globs by one compiled regex."""

    exact: frozenset[str]
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, patterns: tuple[str, ...]) -> _Globs:
        exact = frozenset(p for p in patterns if not _GLOB_CHARS & set(p))
        globs = [fnmatch.translate(p) for p in patterns if _GLOB_CHARS & set(p)]
        return cls(exact, re.compile("|".join(globs)) if globs else None)

    def __contains__(self, name: str) -> bool:
        return name in self.exact or (self.regex is not None and self.regex.match(name) is not None)


@attrs.frozen
class HeaderPolicy:
    """A per-model header policy; see the module docstring for the order of steps.

    Build with keyword arguments (``HeaderPolicy(mode="whitelist", allow=["x-*"])``);
    names are lower-cased and checked on construction (`ValueError` on a bad one).
    """

    mode: Mode = attrs.field(default="passthrough", validator=attrs.validators.in_(MODES))
    allow: tuple[str, ...] = attrs.field(default=(), converter=_lower_tuple)
    deny: tuple[str, ...] = attrs.field(default=(), converter=_lower_tuple)
    drop: tuple[str, ...] = attrs.field(default=(), converter=_lower_tuple)
    add: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_header_items)
    force: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_header_items)
    side: Side = attrs.field(default="request", validator=attrs.validators.in_(("request", "response")))
    _allowed: _Globs = attrs.field(init=False, repr=False, eq=False, hash=False)
    _denied: _Globs = attrs.field(init=False, repr=False, eq=False, hash=False)
    _dropped: _Globs = attrs.field(init=False, repr=False, eq=False, hash=False)
    _verdicts: dict[str, bool] = attrs.field(init=False, factory=dict, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        for pattern in (*self.allow, *self.deny, *self.drop):
            _raise_if(pattern_problem(pattern))
        for name, value in (*self.add, *self.force):
            _raise_if(name_problem(name) or managed_problem(name, self.side) or value_problem(value))
        for label, items in (("add", self.add), ("force", self.force)):
            names = [name for name, _ in items]
            if len(set(names)) != len(names):
                raise ValueError(f"{label} names a header twice")
        # Compiled once here: apply() runs on every request.
        object.__setattr__(self, "_allowed", _Globs.compile(self.allow))
        object.__setattr__(self, "_denied", _Globs.compile(self.deny))
        object.__setattr__(self, "_dropped", _Globs.compile(self.drop))

    @property
    def is_default(self) -> bool:
        """True when the policy only applies the always-on rules."""
        return self.mode == "passthrough" and not (self.allow or self.deny or self.drop or self.add or self.force)

    def apply(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers to forward: lower-cased names, client order kept, then add and force."""
        verdicts = self._verdicts
        out: list[tuple[str, str]] = []
        connection: list[str] = []
        for name, value in headers:
            lname = name.lower()
            keep = verdicts.get(lname)
            if keep is None:
                keep = self._remember(lname)
            if keep:
                out.append((lname, value))
            elif lname == "connection":
                connection.append(value)
        if connection:
            out = _drop_connection_listed(out, connection)
        if self.add or self.force:
            out = self._set(out)
        return out

    def apply_response(self, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """`apply` for upstream response headers; only valid on a ``side="response"`` policy."""
        if self.side != "response":
            raise ValueError("apply_response() needs a response-side policy (response_headers:)")
        return self.apply(headers)

    def _remember(self, lname: str) -> bool:
        keep = self._keeps(lname)
        if len(self._verdicts) < _MEMO_LIMIT:
            self._verdicts[lname] = keep
        return keep

    def _keeps(self, lname: str) -> bool:
        """Steps 1-3 and drop for one (lower-case) name."""
        if lname in _ALWAYS_REMOVED[self.side] or lname.startswith(("proxy-", ":")):
            return False
        if self.mode == "whitelist" and lname not in self._allowed:
            return False
        if self.mode == "blacklist" and lname in self._denied:
            return False
        if lname in CREDENTIAL_HEADERS[self.side] and lname not in self._allowed.exact:
            return False  # only an exact name lets a credential through; force re-adds its own
        return lname not in self._dropped

    def _set(self, out: list[tuple[str, str]]) -> list[tuple[str, str]]:
        present = {name for name, _ in out}
        out.extend(item for item in self.add if item[0] not in present)
        if self.force:
            forced = {name for name, _ in self.force}
            out = [item for item in out if item[0] not in forced]
            out.extend(self.force)
        return out


def _drop_connection_listed(out: list[tuple[str, str]], connection: list[str]) -> list[tuple[str, str]]:
    """RFC 9110 §7.6.1: the names a Connection header lists are hop-by-hop too."""
    listed = {token.strip().lower() for value in connection for token in value.split(",")}
    listed -= _COMMON_CONNECTION_TOKENS  # "keep-alive", "close": nothing more to remove
    if not listed:
        return out
    return [item for item in out if item[0] not in listed]


def override(headers: list[tuple[str, str]], last: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` with every name in `last` replaced by the values in `last` (names lower-case).

    For the caller's final step (backend credential, ``content-type``,
    ``accept-encoding``, ``anthropic-version``): appending instead would send two
    values, which an upstream may join (``gzip, identity``) or reject.
    """
    if not last:
        return headers
    names = {name for name, _ in last}
    return [item for item in headers if item[0] not in names] + list(last)


def _raise_if(problem: str | None) -> None:
    if problem is not None:
        raise ValueError(problem)


DEFAULT_POLICY = HeaderPolicy()
DEFAULT_RESPONSE_POLICY = HeaderPolicy(side="response")
