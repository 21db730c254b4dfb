"""``${VAR}`` substitution in configuration strings, with the environment passed in.

Theory of operation: the configuration is parsed first (YAML or JSON) and only
then is each string scalar scanned here, so a variable's value can never inject
YAML structure.  The scanner walks the text left to right and recognises exactly
three forms:

* ``${NAME}``: the variable's value; an unset variable is an error (the caller
  learns every missing name, not only the first).
* ``${NAME:-default}``: the value, or ``default`` when the variable is unset *or
  empty* (the POSIX shell's ``:-``).  The default is literal text up to the first
  ``}``; a ``${`` inside it is rejected rather than half-supported.
* ``$${``: a literal ``${`` (the escape).

Any other ``$`` is literal, so ``pa$$word`` and ``cost: $5`` survive untouched.
``NAME`` follows the shell: a letter or ``_``, then letters, digits or ``_``.

The result remembers which variables it read (`Substituted.variables`), so the
loader can later say "model X has no API key: set OPENAI_API_KEY".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

__all__ = ["SubstitutionError", "Substituted", "substitute"]

# After "${": a name, then either "}" or ":-default}".
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(\})|:-([^}]*)\})")


@attrs.frozen
class Substituted:
    """A string after substitution and the variables it was read from (in order)."""

    value: str
    variables: tuple[str, ...] = ()


class SubstitutionError(ValueError):
    """One or more problems in a string; `problems` holds each one's message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def substitute(text: str, env: Mapping[str, str]) -> Substituted:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in `text` from `env`.

    Raises `SubstitutionError` listing every unset variable and syntax problem.
    """
    if "$" not in text:  # the common case: nothing to do
        return Substituted(text)
    out: list[str] = []
    names: list[str] = []
    problems: list[str] = []
    pos = 0
    while (dollar := text.find("$", pos)) != -1:
        out.append(text[pos:dollar])
        pos = _expand_at(text, dollar, env, out, names, problems)
    out.append(text[pos:])
    if problems:
        raise SubstitutionError(problems)
    return Substituted("".join(out), tuple(dict.fromkeys(names)))


def _expand_at(
    text: str,
    dollar: int,
    env: Mapping[str, str],
    out: list[str],
    names: list[str],
    problems: list[str],
) -> int:
    """Handle the ``$`` at `dollar`; append its expansion to `out`; return where to resume."""
    if text.startswith("$${", dollar):
        out.append("${")
        return dollar + 3
    if not text.startswith("${", dollar):
        out.append("$")
        return dollar + 1
    match = _REFERENCE.match(text, dollar + 2)
    if match is None:
        problems.append(_syntax_problem(text, dollar))
        out.append(text[dollar:])
        return len(text)
    name, closed, default = match.group(1, 2, 3)
    names.append(name)
    value = env.get(name)
    if closed:
        if value is None:
            problems.append(
                f"environment variable {name} is not set (use ${{{name}:-}} to allow it to be empty)"
            )
        out.append(value or "")
    elif "${" in default:
        problems.append(f"nested substitution in the default of ${{{name}:-...}} is not supported")
    else:
        out.append(value if value else default)
    return match.end()


def _syntax_problem(text: str, dollar: int) -> str:
    rest = text[dollar:]
    if "}" not in rest:
        return f"unterminated '${{' at {rest[:20]!r} (write '$${{' for a literal '${{')"
    return (
        f"invalid substitution {rest[: rest.index('}') + 1]!r}: expected ${{NAME}} or ${{NAME:-default}}"
        " (write '$${' for a literal '${')"
    )
