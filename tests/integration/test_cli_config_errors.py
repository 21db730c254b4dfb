"""A configuration that fails to load is reported in full, and never with a key in it.

`ConfigError` messages quote the offending value after ``${VAR}`` substitution,
so an endpoint refused for its query string would print the key it carries.
`llm-proxy check-config` and `llm-proxy serve` print the errors through
`io_trio.loading.config_error_text`, which blanks what the file references as
a secret.  (tests/integration/test_canary.py covers the same for every log.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError
from io_trio.cli import main
from io_trio.loading import config_error_text, load_config_file

REPO = Path(__file__).parents[2]
ENV_CANARY = "sk-canary-env-7c6b5a4d3e2f1a0b"
LITERAL_CANARY = "canary-literal-key-9e8d7c6b"
ENV = {"CANARY_API_KEY": ENV_CANARY}

# Refused twice: the endpoint has a query string (quoted whole in the error), and
# ssl_verify is not a boolean, so the output is more than just the key's line.
BAD_YAML = f"""\
models:
  gpt:
    backend_type: openai
    endpoint: https://api.example.test/v1?key=${{CANARY_API_KEY}}
    api_key: {LITERAL_CANARY}
    ssl_verify: maybe
  claude:
    backend_type: anthropic
    endpoint: "https://api.example.test/{LITERAL_CANARY}?x=1"
    api_key: ${{CANARY_API_KEY}}
"""
BAD_JSON = {"models": {"gpt": {
    "backend_type": "openai", "endpoint": "https://api.example.test/v1?key=${CANARY_API_KEY}",
    "api_key": LITERAL_CANARY, "ssl_verify": "maybe",
}}}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raw_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config_file(path, ENV)
    return str(caught.value)


def assert_clean(output: str) -> None:
    for canary in (ENV_CANARY, LITERAL_CANARY):
        assert canary not in output


def test_the_raw_error_does_quote_the_key(tmp_path: Path) -> None:
    """What the tests below protect against: without redaction the key is printed."""
    assert ENV_CANARY in raw_error(write(tmp_path, "bad.yaml", BAD_YAML))


def test_config_error_text_blanks_the_keys_and_keeps_every_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD_YAML)
    text = config_error_text(path, ConfigError(raw_error(path).splitlines()), ENV)
    assert_clean(text)
    assert text.splitlines() == [
        "models.gpt.endpoint: expected a base URL without query, fragment or spaces, "
        "got 'https://api.example.test/v1?key=[redacted]'",
        "models.gpt.ssl_verify: expected a boolean (true or false), got 'maybe'",
        "models.claude.endpoint: expected a base URL without query, fragment or spaces, "
        "got 'https://api.example.test/[redacted]?x=1'",
    ]


def test_an_error_without_secrets_is_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "models:\n  m:\n    backend_type: mock\n    weight: heavy\n")
    err = ConfigError(raw_error(path).splitlines())
    assert config_error_text(path, err, ENV) == str(err)


def test_an_unreadable_file_still_gets_key_shapes_blanked(tmp_path: Path) -> None:
    err = ConfigError([f"models.gpt.endpoint: got 'https://x.test/v1?key={ENV_CANARY}'"])
    assert ENV_CANARY not in config_error_text(tmp_path / "gone.yaml", err, {})


@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize("name", ["bad.yaml", "bad.json"])
def test_the_cli_reports_every_error_without_the_key(command: str, name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, name, BAD_YAML if name.endswith(".yaml") else json.dumps(BAD_JSON))
    monkeypatch.setenv("CANARY_API_KEY", ENV_CANARY)
    args = ["check-config", str(path)] if command == "check-config" else ["serve", "--config", str(path)]
    assert main(args) == (1 if command == "check-config" else 2)
    out, err = capsys.readouterr()
    assert out == ""
    assert "models.gpt.endpoint: " in err and "?key=[redacted]'" in err
    assert "models.gpt.ssl_verify: expected a boolean" in err
    assert_clean(err)


def test_check_config_in_a_terminal_never_prints_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD_YAML)
    env = {**os.environ, **ENV}
    done = subprocess.run([sys.executable, "-m", "io_trio.cli", "check-config", str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"{path}: invalid configuration:\n")
    assert "ssl_verify" in done.stderr
    assert_clean(done.stdout + done.stderr)
