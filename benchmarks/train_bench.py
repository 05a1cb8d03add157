"""Fine-tuning loop and grid runner: speed against plain PyTorch, memory against grid size.

1. Throughput: images/s of `hf_negmerge.training.finetune` (accelerate, scheduler, clipping,
   label smoothing) against a bare PyTorch loop doing the same work (forward, cross-entropy,
   backward, gradient clipping, AdamW step, cosine schedule) and against a minimal one (no
   clipping, no schedule), on the same tiny model, data, batches and threads, measured in this
   process, alternating the three and keeping each one's best of `--repeats`.
2. Memory: peak RSS during a whole `run_grid` with `--points` grid points against a 1-point
   grid, each in a fresh interpreter (sampled every 10 ms, plus the process's `ru_maxrss`), so
   the figures are comparable: a runner that keeps models or task vectors alive would grow
   with the grid.

    python benchmarks/train_bench.py                 # defaults: tiny ViT, 30-point grid
    python benchmarks/train_bench.py --arch clip --points 10 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch


def _data(size: int):
    from hf_negmerge.data import load_digits_dataset

    return load_digits_dataset()["train"].select(range(size))


def _classifier(arch: str, class_names: list[str]):
    from hf_negmerge.models import ModelConfig, build_classifier

    return build_classifier(ModelConfig(architecture=arch), class_names)


def _plain_loop(classifier, dataset, hyperparameters, same_work: bool) -> None:
    """A bare PyTorch loop over the same batches: forward, cross-entropy, backward, AdamW step.

    `same_work=True` also does what our loop's settings ask for: gradient clipping and the
    warm-up/cosine learning-rate schedule (transformers' function, as ours), the same weight decay;
    `same_work=False` is the minimal loop (no clipping, no schedule, AdamW's default decay).
    """
    from transformers import get_cosine_schedule_with_warmup

    from hf_negmerge.data.collate import ImageClassificationCollator, make_dataloader

    classifier.mark_trainable()
    loader = make_dataloader(
        dataset,
        ImageClassificationCollator(classifier.preprocess),
        hyperparameters.batch_size,
        True,
        hyperparameters.seed,
    )
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    if same_work:
        optimizer = torch.optim.AdamW(
            parameters, lr=hyperparameters.learning_rate, weight_decay=hyperparameters.weight_decay
        )
        scheduler = get_cosine_schedule_with_warmup(
            optimizer, hyperparameters.warmup_steps, len(loader) * hyperparameters.epochs
        )
    else:
        optimizer = torch.optim.AdamW(parameters, lr=hyperparameters.learning_rate)
    classifier.train()
    for _ in range(hyperparameters.epochs):
        for batch in loader:
            loss = torch.nn.functional.cross_entropy(classifier(batch["pixel_values"]), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            if same_work:
                torch.nn.utils.clip_grad_norm_(parameters, hyperparameters.grad_clip)
            optimizer.step()
            if same_work:
                scheduler.step()


LOOPS = ("bare", "ours", "minimal")


def throughput(arch: str, size: int, epochs: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Best-of-`repeats` seconds of each loop, the three alternating within every repeat."""
    from hf_negmerge.training import TrainingHyperparameters, finetune

    dataset = _data(size)
    names = dataset.features["label"].names
    hyperparameters = TrainingHyperparameters(
        learning_rate=1e-3, epochs=epochs, warmup_steps=0, batch_size=batch_size, weight_decay=0.0
    )
    best = dict.fromkeys(LOOPS, float("inf"))
    best_cpu = dict.fromkeys(LOOPS, float("inf"))
    for _ in range(repeats):
        for name in LOOPS:
            classifier = _classifier(arch, names)
            started, started_cpu = time.perf_counter(), time.process_time()
            if name == "ours":
                finetune(classifier, dataset, hyperparameters, progress=False)
            else:
                _plain_loop(classifier, dataset, hyperparameters, same_work=name == "bare")
            best[name] = min(best[name], time.perf_counter() - started)
            best_cpu[name] = min(best_cpu[name], time.process_time() - started_cpu)
    images = size * epochs
    row: dict[str, float] = {"images": images}
    for name in LOOPS:
        row[f"{name}_images_per_s"] = images / best[name]
    row["ratio"] = best["bare"] / best["ours"]
    row["ratio_minimal"] = best["minimal"] / best["ours"]
    # CPU time of this process: with one torch thread, far less sensitive to other jobs than wall time
    row["cpu_ratio"] = best_cpu["bare"] / best_cpu["ours"]
    row["cpu_ratio_minimal"] = best_cpu["minimal"] / best_cpu["ours"]
    return row


def grid_worker(arch: str, points: int, output: str) -> None:
    """Runs in a fresh interpreter: one grid, then prints peak RSS as JSON."""
    from hf_negmerge.data import DataConfig, build_unlearning_data
    from hf_negmerge.training import GridSpec, run_grid

    data = build_unlearning_data(DataConfig(dataset="digits", scenario="class", forget_classes=[3]))
    base_dir = Path(output) / "original"
    _classifier(arch, data.class_names).save_pretrained(base_dir)
    spec = GridSpec(
        base={"epochs": 1, "warmup_steps": 0, "batch_size": 64, "learning_rate": 1e-3},
        axes={"seed": list(range(points))},
    )
    with _RssSampler() as sampler:
        started = time.perf_counter()
        result = run_grid(
            base_dir, data, spec, Path(output) / "grid", keep_task_vectors=False, progress=False
        )
        seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {
        "points": points,
        "runs": len(result.trained),
        "seconds": seconds,
        "rss_before_mib": sampler.start_mib,
        "grid_peak_rss_mib": sampler.peak_mib,
        "process_peak_rss_mib": peak_kib / 1024,
    }
    print(json.dumps(row))


class _RssSampler:
    """Peak resident memory while the block runs, sampled every 10 ms on a background thread.

    `ru_maxrss` alone would also count the imports and data loading before the grid.
    """

    def __enter__(self) -> _RssSampler:
        import psutil

        self._process = psutil.Process()
        self.start_mib = self.peak_mib = self._process.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def grid_memory(arch: str, points: int) -> list[dict[str, float]]:
    rows = []
    for count in (1, points):
        with tempfile.TemporaryDirectory() as folder:
            command = [
                sys.executable,
                __file__,
                "--grid-worker",
                str(count),
                "--arch",
                arch,
                "--output",
                folder,
            ]
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit", choices=["vit", "clip"])
    parser.add_argument("--size", type=int, default=512, help="training images for the throughput test")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=30, help="grid size compared with a 1-point grid")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (same for both loops)")
    parser.add_argument("--skip-grid", action="store_true", help="throughput only")
    parser.add_argument("--grid-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.grid_worker is not None:
        grid_worker(args.arch, args.grid_worker, args.output)
        return

    speed = throughput(args.arch, args.size, args.epochs, args.batch_size, args.repeats)
    print(
        f"throughput ({args.arch}, {args.size} images x {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.threads} thread(s), best of {args.repeats})"
    )
    print(f"  hf_negmerge finetune            : {speed['ours_images_per_s']:8.1f} images/s")
    print(f"  bare loop, same work            : {speed['bare_images_per_s']:8.1f} images/s")
    print(f"  bare loop, minimal              : {speed['minimal_images_per_s']:8.1f} images/s")
    print(f"  ratio ours / bare (same work)   : {speed['ratio']:8.2f}")
    print(f"  ratio ours / minimal            : {speed['ratio_minimal']:8.2f}")
    print(f"  CPU-time ratio ours / bare      : {speed['cpu_ratio']:8.2f}")
    print(f"  CPU-time ratio ours / minimal   : {speed['cpu_ratio_minimal']:8.2f}")
    print(f"  load average (1 min) after      : {os.getloadavg()[0]:8.2f}")
    if args.skip_grid:
        return
    rows = grid_memory(args.arch, args.points)
    print(f"grid memory ({args.arch}, 1 epoch per point, fresh interpreter each)")
    for row in rows:
        print(
            f"  {row['points']:3d} point(s): RSS before {row['rss_before_mib']:6.1f} MiB, "
            f"peak during grid {row['grid_peak_rss_mib']:6.1f} MiB, process peak {row['process_peak_rss_mib']:6.1f} MiB, "
            f"{row['seconds']:5.1f} s ({row['seconds'] / row['points']:.2f} s/run)"
        )
    growth = [row["grid_peak_rss_mib"] - row["rss_before_mib"] for row in rows]
    print(
        f"  grid's own peak: {growth[0]:+.1f} MiB (1 point) vs {growth[-1]:+.1f} MiB ({args.points} points)"
    )


if __name__ == "__main__":
    main()
