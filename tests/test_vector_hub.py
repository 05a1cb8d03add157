"""TaskVector / NegationVector through huggingface_hub's ModelHubMixin, and the sign of negation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, ModelHubMixin

from conftest import make_tiny_vit
from hf_negmerge import NegationVector, NegMergeConfig, TaskVector
from hf_negmerge.errors import CheckpointError, ConfigError, HubUnavailableError
from hf_negmerge.key_space import checkpoint_state_dict
from hf_negmerge.negation import unlearn
from hub_stand_in import HubStandIn
from test_hub import _point_hub_at
from test_merge_cli import finetune_like


def sample_vector() -> TaskVector:
    generator = torch.Generator().manual_seed(5)
    return TaskVector(
        {
            "w": torch.randn(7, 3, generator=generator),
            "h": torch.randn(5, generator=generator).to(torch.bfloat16),
            "d": torch.randn(2, 2, generator=generator).double(),
        },
        {"base_model": "alice/base", "runs": [1, 2]},
    )


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def assert_same(one: TaskVector, two: TaskVector) -> None:
    assert set(one.keys()) == set(two.keys()) and one.metadata == two.metadata
    for key in one:
        assert one[key].dtype == two[key].dtype and torch.equal(one[key], two[key]), key


def test_vectors_are_model_hub_mixins() -> None:
    assert issubclass(TaskVector, ModelHubMixin) and issubclass(NegationVector, ModelHubMixin)


def test_task_vector_save_pretrained_round_trips_bit_exactly(tmp_path: Path) -> None:
    vector = sample_vector()
    vector.save_pretrained(tmp_path / "tv")
    assert {p.name for p in (tmp_path / "tv").iterdir()} == {"task_vector.safetensors", "README.md"}
    assert_same(TaskVector.from_pretrained(tmp_path / "tv"), vector)
    assert_same(TaskVector.from_pretrained(tmp_path / "tv" / "task_vector.safetensors"), vector)
    card = ModelCard.load(tmp_path / "tv" / "README.md")
    assert card.data.library_name == "hf-negmerge" and "task-vector" in card.data.tags


def test_saving_next_to_a_model_leaves_its_files_alone(tmp_path: Path) -> None:
    make_tiny_vit().save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text("my own card")
    before = digest(tmp_path)
    sample_vector().save_pretrained(tmp_path)
    NegationVector.from_task_vector(sample_vector(), 0.5).save_pretrained(tmp_path)
    after = digest(tmp_path)
    assert {name: after[name] for name in before} == before  # config.json and the card untouched
    assert {"task_vector.safetensors", "negation_vector.safetensors", "negation_vector_config.json"} <= set(
        after
    )
    assert NegationVector.from_pretrained(tmp_path).scale == 0.5


def test_negation_vector_round_trip_keeps_lambda_config_and_metadata(tmp_path: Path) -> None:
    config = NegMergeConfig(method="ties", density=0.4)
    vector = NegationVector.from_task_vector(sample_vector(), 0.25, base_model="alice/base", config=config)
    vector.save_pretrained(tmp_path)
    loaded = NegationVector.from_pretrained(tmp_path)
    assert (loaded.scale, loaded.base_model, loaded.method) == (0.25, "alice/base", "ties")
    assert loaded.config == config and loaded.metadata == vector.metadata
    assert all(torch.equal(loaded.tensors[key], vector.tensors[key]) for key in vector.tensors)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = HubStandIn().start()
    _point_hub_at(monkeypatch, server.url, tmp_path / "hf-cache")
    try:
        yield server
    finally:
        server.stop()


def test_task_vector_push_to_hub_and_back_at_a_revision(hub: HubStandIn) -> None:
    vector = sample_vector()
    url = vector.push_to_hub("alice/tau", revision="exp", commit_message="tau")
    repo = hub.repos["alice/tau"]
    assert url.endswith(repo.branches["exp"]) and repo.commit_messages == ["tau"]
    assert set(repo.files("exp")) == {".gitattributes", "task_vector.safetensors", "README.md"}
    assert_same(TaskVector.from_pretrained("alice/tau", revision="exp"), vector)
    with pytest.raises(CheckpointError, match="alice/tau"):
        TaskVector.from_pretrained("alice/tau")  # main holds no vector


def test_negation_vector_push_to_hub_and_back(hub: HubStandIn) -> None:
    vector = NegationVector.from_task_vector(sample_vector(), 0.75, base_model="alice/base")
    vector.push_to_hub("alice/neg")
    assert "λ=0.75" in hub.repos["alice/neg"].commit_messages[0]
    loaded = NegationVector.from_pretrained("alice/neg")
    assert loaded.scale == 0.75 and all(
        torch.equal(loaded.tensors[k], vector.tensors[k]) for k in vector.tensors
    )


def test_from_pretrained_of_a_hub_id_offline_names_the_id() -> None:
    with pytest.raises(HubUnavailableError, match=r"'nobody-org/tau'.*HF_HUB_OFFLINE"):
        TaskVector.from_pretrained("nobody-org/tau")


def test_apply_to_adds_and_negate_into_subtracts() -> None:
    base = make_tiny_vit()
    tuned = finetune_like(base, seed=1)
    base_sd, tuned_sd = checkpoint_state_dict(base), checkpoint_state_dict(tuned)
    tau = TaskVector.from_state_dicts(base_sd, tuned_sd)
    added = tau.apply_to(base_sd, scale=1.0)  # θ₀ + τ gives the fine-tuned weights back
    for key in tau:
        torch.testing.assert_close(added[key], tuned_sd[key], rtol=0, atol=1e-6)
    negated = tau.negate_into(base_sd, scale=0.3)
    for key in tau:  # θ₀ − 0.3·(θ₁ − θ₀), computed here in float64 from the two state dicts
        expected = (base_sd[key].double() - 0.3 * (tuned_sd[key].double() - base_sd[key].double())).float()
        torch.testing.assert_close(negated[key], expected, rtol=0, atol=1e-6)
        assert torch.equal(negated[key], tau.apply_to(base_sd, scale=-0.3)[key])
        assert torch.equal(negated[key], unlearn(dict(base_sd), tau, 0.3)[key])


@pytest.mark.parametrize("call", ["negate_into", "unlearn", "negation_vector"])
def test_a_negative_lambda_is_refused_everywhere(call: str) -> None:
    tau = sample_vector()
    state = {key: torch.zeros_like(tensor) for key, tensor in tau.tensors.items()}
    with pytest.raises((ConfigError, CheckpointError), match="negative"):
        if call == "negate_into":
            tau.negate_into(state, scale=-1)
        elif call == "unlearn":
            unlearn(state, tau, -1)
        else:
            NegationVector.from_task_vector(tau, -1.0)
