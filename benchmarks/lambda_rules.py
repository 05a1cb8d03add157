"""Benchmark: how often would other λ rules have met the target on finished sweeps?

The λ rule sees validation rows only; whether its choice holds is decided on the test rows. This
script re-evaluates every λ of each finished trial (folders written by
`benchmarks/unlearning_seeds.py` or `hf-negmerge unlearn`: θ₀ from `metrics.json`'s
`base_model`, the merged vector from `merged_task_vector.safetensors`) on validation AND test
rows, then counts, per rule, the trials whose chosen λ meets "forget ≤ --max-forget %, retain ≥
--retain-ratio × original" on test. `oracle` counts the trials where any λ of the grid meets it:
the most any rule on that grid could reach. The `paper` rule must reproduce each trial's own
choice (checked), so the test numbers here are the pipeline's.

    python benchmarks/lambda_rules.py vit-dev lora-dev            # sweep roots or trial folders

Compare rules on development trials only: a rule picked on the reported trials is tuned to them.
Per-λ accuracies are cached as JSON under --cache-dir (nothing is written into the trial folders).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Curve = list[dict[str, float]]
SPLITS = ("forget_val", "retain_val", "forget_test", "retain_test")


def trial_folders(paths: list[Path]) -> list[Path]:
    """Each path is a trial folder (has metrics.json) or a sweep root holding trial folders."""
    folders: list[Path] = []
    for path in paths:
        if (path / "metrics.json").is_file():
            folders.append(path)
            continue
        if not path.is_dir():
            raise SystemExit(f"{path}: no such folder.")
        found = sorted(child for child in path.iterdir() if (child / "metrics.json").is_file())
        if not found:
            raise SystemExit(f"{path}: neither a trial folder (metrics.json) nor a sweep root holding any.")
        folders.extend(found)
    return folders


def evaluate_curve(folder: Path, metrics: dict[str, Any]) -> Curve:
    """Accuracies of θ₀ − λ·τ on the four splits at every λ the trial searched."""
    from hf_negmerge.data.scenarios import build_unlearning_data
    from hf_negmerge.evaluation.engine import Evaluator, encode_splits
    from hf_negmerge.models import ImageClassifier
    from hf_negmerge.originals import model_label_names
    from hf_negmerge.recipe import load_recipe
    from hf_negmerge.task_vector import TaskVector

    recipe = load_recipe(folder / "recipe.yaml")
    data = build_unlearning_data(recipe.data, model_label_names(recipe))
    classifier = ImageClassifier.from_pretrained(metrics["base_model"])
    evaluator = Evaluator(classifier, encode_splits(classifier, data, recipe), recipe.evaluation.batch_size)
    vector = TaskVector.load(folder / "merged_task_vector.safetensors")
    curve = []
    for point in metrics["lambda_curve"]:
        evaluator.set_weights(vector, point["scale"])
        curve.append({"scale": point["scale"], **{split: evaluator.accuracy(split) for split in SPLITS}})
    return curve


def cached_curve(folder: Path, metrics: dict[str, Any], cache_dir: Path) -> Curve:
    """The trial's curve, computed once per content of its metrics.json."""
    from hf_negmerge.checkpoints import atomic_write_text

    digest = hashlib.sha256((folder / "metrics.json").read_bytes()).hexdigest()[:16]
    cache = cache_dir / f"{folder.name}-{digest}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    curve = evaluate_curve(folder, metrics)
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cache, json.dumps(curve))
    return curve


def authors_rule(retain_ratio: float) -> Callable[[Curve], dict[str, float]]:
    """hf_negmerge's own `select_lambda` on the validation columns."""
    from hf_negmerge.lambda_search import LambdaPoint, select_lambda

    def choose(curve: Curve) -> dict[str, float]:
        points = [LambdaPoint(row["scale"], row["forget_val"], row["retain_val"]) for row in curve]
        original = next(point for point in points if point.scale == 0.0)
        scale = select_lambda(points, original, retain_ratio=retain_ratio).scale
        return next(row for row in curve if row["scale"] == scale)

    return choose


def forget_tolerance_rule(points: float) -> Callable[[Curve], dict[str, float]]:
    """The authors' qualifying set, then the smallest λ within `points` of its lowest forget accuracy."""
    from hf_negmerge.lambda_search import THRESHOLD_TOLERANCE

    def choose(curve: Curve) -> dict[str, float]:
        threshold = 0.95 * next(row for row in curve if row["scale"] == 0.0)["retain_val"]
        qualifying = [row for row in curve if row["retain_val"] >= threshold - THRESHOLD_TOLERANCE]
        if not qualifying:
            return authors_rule(0.95)(curve)
        lowest = min(row["forget_val"] for row in qualifying)
        return min(
            (row for row in qualifying if row["forget_val"] <= lowest + points + 1e-9),
            key=lambda r: r["scale"],
        )

    return choose


RULES: dict[str, Callable[[Curve], dict[str, float]]] = {
    "paper (retain ≥ 0.95 × original)": authors_rule(0.95),
    "margin: retain ≥ 0.96 × original": authors_rule(0.96),
    "margin: retain ≥ 0.97 × original": authors_rule(0.97),
    "smallest λ within 5 points of the lowest forget": forget_tolerance_rule(5.0),
}


def meets(row: dict[str, float], original: dict[str, float], max_forget: float, retain_ratio: float) -> bool:
    return row["forget_test"] <= max_forget and row["retain_test"] >= retain_ratio * original["retain_test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="sweep roots or trial folders")
    parser.add_argument("--cache-dir", type=Path, default=Path("lambda-rules-cache"))
    parser.add_argument("--max-forget", type=float, default=15.0)
    parser.add_argument("--retain-ratio", type=float, default=0.95)
    args = parser.parse_args()

    from hf_negmerge.threads import configure_torch_threads

    print(f"torch threads: {configure_torch_threads()}", flush=True)
    folders = trial_folders(args.paths)
    outcomes: dict[str, list[str]] = {name: [] for name in [*RULES, "oracle (any λ of the grid)"]}
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        curve = cached_curve(folder, metrics, args.cache_dir)
        original = next(row for row in curve if row["scale"] == 0.0)
        label = f"{folder.parent.name}/{folder.name}"
        for name, rule in RULES.items():
            row = rule(curve)
            if name.startswith("paper") and row["scale"] != metrics["scale"]:
                raise SystemExit(
                    f"{label}: the paper rule chose λ={row['scale']}, the trial {metrics['scale']}."
                )
            if not meets(row, original, args.max_forget, args.retain_ratio):
                ratio = row["retain_test"] / original["retain_test"]
                outcomes[name].append(
                    f"{label} (λ {row['scale']:g}: forget {row['forget_test']:.1f}, retain {ratio:.3f})"
                )
        if not any(meets(row, original, args.max_forget, args.retain_ratio) for row in curve):
            outcomes["oracle (any λ of the grid)"].append(label)

    print(f"\n| λ rule | meets the target (of {len(folders)}) | misses |\n|---|---|---|")
    for name, misses in outcomes.items():
        print(f"| {name} | {len(folders) - len(misses)} | {'; '.join(misses) or 'none'} |")


if __name__ == "__main__":
    main()
