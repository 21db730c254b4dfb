"""The shipped configurations load, so they never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError
from io_trio.loading import load_config_file

CONFIGS = sorted((Path(__file__).parents[2] / "config").glob("*.y*ml"))
KEYS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}


def test_every_shipped_config_is_covered():
    assert {p.name for p in CONFIGS} >= {"example-config.yaml", "openai-only.yaml", "multi-backend.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    config = load_config_file(path, KEYS)
    assert config.models
    for model in config.models.values():
        for fallback in model.fallbacks:
            assert config.router.route(fallback) is not None


def test_default_config_needs_no_keys_and_serves_any_model_name():
    config = load_config_file(Path(__file__).parents[2] / "config" / "example-config.yaml", {})
    assert config.router.route("mock").deployments[0].backend_type == "mock"
    assert config.router.route("claude-sonnet-4-5").deployments[0].backend_type == "mock"
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)


def test_openai_only_config_names_the_missing_key():
    with pytest.raises(ConfigError) as caught:
        load_config_file(Path(__file__).parents[2] / "config" / "openai-only.yaml", {})
    assert "OPENAI_API_KEY" in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config_file(tmp_path / "nope.yaml", {})
    assert "cannot read" in str(caught.value)
