"""NegMergeConfig validation and persistence."""

from __future__ import annotations

import json

import pytest

from hf_negmerge import NegMergeConfig
from hf_negmerge.config import CONFIG_NAME, default_lambda_grid
from hf_negmerge.errors import ConfigError


def test_defaults_are_the_papers():
    config = NegMergeConfig()
    assert config.method == "negmerge" and config.is_unanimous
    assert config.retain_ratio == 0.95
    assert len(config.lambda_grid) == 21 and config.lambda_grid[0] == 0.0 and config.lambda_grid[-1] == 1.0
    assert config.lambda_grid[7] == 0.35  # no float drift


def test_json_round_trip(tmp_path):
    config = NegMergeConfig(method="ties", density=0.2, include=["vision_model.*"], lambda_grid=[0.5, 1.5])
    path = config.save_pretrained(tmp_path)
    assert path.name == CONFIG_NAME
    assert NegMergeConfig.from_pretrained(tmp_path) == config
    assert NegMergeConfig.from_dict(json.loads(path.read_text())) == config


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"method": "median"}, "method"),
        ({"consensus_fraction": 0.5}, "consensus_fraction"),
        ({"density": 0.0}, "density"),
        ({"majority_sign_method": "vote"}, "majority_sign_method"),
        ({"accumulation_dtype": "float16"}, "accumulation_dtype"),
        ({"lambda_grid": []}, "lambda_grid"),
        ({"lambda_grid": [-0.5]}, "lambda_grid"),
        ({"retain_ratio": 1.5}, "retain_ratio"),
        ({"fallback": "shrug"}, "fallback"),
        ({"include": [""]}, "include"),
    ],
)
def test_bad_values_name_the_field(values, named):
    with pytest.raises(ConfigError, match=named):
        NegMergeConfig(**values)


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="colour"):
        NegMergeConfig.from_dict({"colour": "red"})
    (tmp_path / CONFIG_NAME).write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        NegMergeConfig.from_pretrained(tmp_path)


def test_grid_helper():
    assert default_lambda_grid(2.0, 0.5) == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_offline_hub_id_fails_fast():
    from hf_negmerge.errors import HubUnavailableError

    with pytest.raises(HubUnavailableError, match="some-org/some-config"):
        NegMergeConfig.from_pretrained("some-org/some-config")
