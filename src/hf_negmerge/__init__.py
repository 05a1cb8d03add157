"""hf-negmerge: machine unlearning by sign-consensus weight merging (NegMerge, ICML 2025).

The public API. Names are imported on first use, so `import hf_negmerge` stays cheap and the
training or Hub stacks load only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "LambdaPoint": "hf_negmerge.lambda_search",
    "LambdaSelection": "hf_negmerge.lambda_search",
    "select_lambda": "hf_negmerge.lambda_search",
    "search_lambda": "hf_negmerge.lambda_search",
    "DataConfig": "hf_negmerge.data",
    "UnlearningData": "hf_negmerge.data",
    "build_unlearning_data": "hf_negmerge.data",
    "load_image_dataset": "hf_negmerge.data",
    "load_digits_dataset": "hf_negmerge.data",
    "ModelConfig": "hf_negmerge.models",
    "ImageClassifier": "hf_negmerge.models",
    "build_classifier": "hf_negmerge.models",
    "apply_lora": "hf_negmerge.models",
    "merge_lora": "hf_negmerge.models",
    "GridSpec": "hf_negmerge.training.grid",
    "TrainingHyperparameters": "hf_negmerge.training.grid",
    "grid_preset": "hf_negmerge.training.grid",
    "run_grid": "hf_negmerge.training.runner",
    "finetune": "hf_negmerge.training.loop",
    "prepare_original_model": "hf_negmerge.training.pretrain",
    "UnlearnRecipe": "hf_negmerge.recipe",
    "load_recipe": "hf_negmerge.recipe",
    "run_unlearning": "hf_negmerge.pipeline",
    "NegMergeUnlearner": "hf_negmerge.unlearner",
    "UnlearningResult": "hf_negmerge.unlearner",
    "EvaluationConfig": "hf_negmerge.recipe",
    "NegationVector": "hf_negmerge.hub.negation_vector",
    "push_unlearned_model": "hf_negmerge.hub.push",
    "push_config": "hf_negmerge.hub.push",
    "UnlearningCardData": "hf_negmerge.hub.card",
    "build_model_card": "hf_negmerge.hub.card",
    "predict": "hf_negmerge.evaluation",
    "mia_efficacy": "hf_negmerge.evaluation",
    "avg_gap": "hf_negmerge.evaluation",
    "NegMergeConfig": "hf_negmerge.config",
    "TaskVector": "hf_negmerge.task_vector",
    "merge": "hf_negmerge.merging",
    "merge_task_vectors": "hf_negmerge.merging",
    "merge_checkpoints": "hf_negmerge.merging",
    "MergeAccumulator": "hf_negmerge.merging",
    "MergeResult": "hf_negmerge.merging",
    "MergeStats": "hf_negmerge.merging",
    "available_methods": "hf_negmerge.merging",
    "register_merge_method": "hf_negmerge.merging",
    "unlearn": "hf_negmerge.negation",
    "write_unlearned_checkpoint": "hf_negmerge.negation",
    "CheckpointReader": "hf_negmerge.checkpoints",
}

__all__ = [
    "CheckpointReader",
    "DataConfig",
    "EvaluationConfig",
    "GridSpec",
    "ImageClassifier",
    "LambdaPoint",
    "LambdaSelection",
    "MergeAccumulator",
    "MergeResult",
    "MergeStats",
    "ModelConfig",
    "NegMergeConfig",
    "NegMergeUnlearner",
    "NegationVector",
    "TaskVector",
    "TrainingHyperparameters",
    "UnlearnRecipe",
    "UnlearningCardData",
    "UnlearningData",
    "UnlearningResult",
    "__version__",
    "apply_lora",
    "available_methods",
    "avg_gap",
    "build_classifier",
    "build_model_card",
    "build_unlearning_data",
    "finetune",
    "grid_preset",
    "load_digits_dataset",
    "load_image_dataset",
    "load_recipe",
    "merge",
    "merge_checkpoints",
    "merge_lora",
    "merge_task_vectors",
    "mia_efficacy",
    "predict",
    "prepare_original_model",
    "push_config",
    "push_unlearned_model",
    "register_merge_method",
    "run_grid",
    "run_unlearning",
    "search_lambda",
    "select_lambda",
    "unlearn",
    "write_unlearned_checkpoint",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_negmerge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
