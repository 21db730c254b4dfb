"""Reading a configuration file: the only place a config touches the disk."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from core.config import Config, ConfigError, load_config

__all__ = ["load_config_file"]


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
