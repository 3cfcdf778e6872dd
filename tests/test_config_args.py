"""Config dataclass fields to CLI options: types, defaults, help from field docstrings."""

from __future__ import annotations

import argparse
import doctest
from dataclasses import dataclass

import pytest

from bae_lens import config_args
from bae_lens.bae import BAE_OPTIONS, BinaryAutoencoderTrainingConfig
from bae_lens.config_args import add_config_options, config_values, field_help


@dataclass
class Demo:
    rate: float = 0.5
    """How often it fires, in 100% units."""
    name: str = "x"
    steps: int = 3


def test_options_take_types_defaults_and_docstrings() -> None:
    parser = argparse.ArgumentParser()
    add_config_options(parser, Demo, ["rate", "name", "steps"], {"steps": 7})
    args = parser.parse_args(["--rate", "0.25"])
    assert config_values(args, ["rate", "name", "steps"]) == {"rate": 0.25, "name": "x", "steps": 7}
    assert field_help(Demo, "rate") == "How often it fires, in 100%% units."  # argparse-safe
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "two"])  # int option


def test_help_shows_the_jobs_default_not_the_dataclasss() -> None:
    parser = argparse.ArgumentParser()
    add_config_options(parser, Demo, ["rate", "steps"], {"steps": 7})
    text = " ".join(parser.format_help().split())
    assert "in 100% units. (default: 0.5)" in text
    assert "--steps STEPS (default: 7)" in text


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\['nope'\] are not fields of Demo"):
        add_config_options(argparse.ArgumentParser(), Demo, ["nope"])


def test_every_bae_option_has_help() -> None:
    for name in BAE_OPTIONS:
        assert field_help(BinaryAutoencoderTrainingConfig, name), name


def test_module_example_runs() -> None:
    result = doctest.testmod(config_args)
    assert result.attempted > 0 and result.failed == 0
