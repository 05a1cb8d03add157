"""NegMergeConfig validation and persistence."""

from __future__ import annotations

import dataclasses
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


def test_negmerge_config_is_the_merge_config_plus_the_lambda_search_config(tmp_path):
    from hf_negmerge.config import MergeConfig
    from hf_negmerge.lambda_search import LambdaSearchConfig

    config = NegMergeConfig(method="ties", density=0.5, retain_ratio=0.9, lambda_grid=[0.0, 2.0], scale=None)
    assert isinstance(config, MergeConfig) and isinstance(config, LambdaSearchConfig)
    assert config.merge_config() == MergeConfig(method="ties", density=0.5)
    assert config.lambda_search_config() == LambdaSearchConfig(lambda_grid=[0.0, 2.0], retain_ratio=0.9)
    # same keys, same order as before the split (negmerge_config.json and saved states unchanged)
    assert list(config.to_dict()) == [
        "method", "consensus_fraction", "ties_variant", "density", "ties_total_elements",
        "majority_sign_method", "include", "exclude", "accumulation_dtype",
        "lambda_grid", "retain_ratio", "fallback", "scale",
    ]  # fmt: skip
    config.save_pretrained(tmp_path)
    assert MergeConfig.from_pretrained(tmp_path) == config.merge_config()  # λ-search keys left out
    with pytest.raises(ConfigError, match=r"Unknown MergeConfig key\(s\) \['retain_ratio'\]"):
        MergeConfig.from_dict({"method": "ties", "retain_ratio": 0.9})
    with pytest.raises(ConfigError, match=r"LambdaSearchConfig\.retain_ratio=1\.5"):
        LambdaSearchConfig(retain_ratio=1.5)
    with pytest.raises(ConfigError, match=r"MergeConfig\.method='median'"):
        MergeConfig(method="median")


def test_merge_differences_name_only_merge_fields():
    old = NegMergeConfig()
    new = NegMergeConfig(consensus_fraction=0.8, exclude=["*.bias"], retain_ratio=0.5, lambda_grid=[1.0])
    assert old.merge_differences(new) == ["consensus_fraction: 1.0 → 0.8", "exclude: None → ['*.bias']"]
    assert old.merge_differences(NegMergeConfig(retain_ratio=0.5, fallback="error", scale=0.3)) == []


def test_a_registered_method_is_a_valid_config_method():
    from hf_negmerge.config import MERGE_METHOD_NAMES, MergeConfig
    from hf_negmerge.merging import MERGE_METHODS, available_methods, get_merge_method, register_merge_method

    assert available_methods() == MERGE_METHOD_NAMES  # the config's names are the registry's
    with pytest.raises(ConfigError, match="mine"):
        MergeConfig(method="mine")
    register_merge_method(dataclasses.replace(get_merge_method("uniform"), name="mine"))
    try:
        assert MergeConfig(method="mine").method == "mine"
    finally:
        del MERGE_METHODS["mine"]
        MERGE_METHOD_NAMES.remove("mine")
