"""Reading a configuration file: the only place a config touches the disk.

A file that fails to load has no `Config` to ask for its secrets, yet its
`ConfigError` can quote a substituted value (an endpoint refused with
``?key=${OPENAI_API_KEY}`` in it).  `config_error_text` is therefore how an
error reaches a terminal or a log: what the file's text references as a secret
is blanked first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from core.config import Config, ConfigError, load_config
from core.redact import Redactor, secrets_in_config_text

__all__ = ["config_error_text", "load_config_file"]


def load_config_file(path: str | Path, env: Mapping[str, str]) -> Config:
    """Load and validate `path` (YAML, or JSON by its `.json` extension)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read the file: {err.strerror or err}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: the file is not UTF-8 text"]) from None
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    return load_config(text, fmt=fmt, env=env, source=str(path))


def config_error_text(path: str | Path, err: ConfigError, env: Mapping[str, str]) -> str:
    """`err` fit to print or log: every secret the file at `path` holds or references is blanked.

    Secrets are found by `core.redact.secrets_in_config_text` (the values of the
    ``${VAR}`` it names that look like keys, literal ``api_key:`` values...) plus
    the usual key shapes (``sk-...``); an unreadable file still gets the latter.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return Redactor(secrets=secrets_in_config_text(text, env)).text(str(err))
