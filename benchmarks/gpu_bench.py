"""GPU benchmark at CLIP ViT-B/32 size: our training loop against a bare loop, and a 30-checkpoint merge.

1. Fine-tuning throughput: the image tower of a `transformers.CLIPModel` built from the
   `openai/clip-vit-base-patch32` config with random weights (the config is read from the local
   Hub cache when present, else written from its published values below), a fixed random
   zero-shot head (the paper trains the image encoder against a frozen text head), synthetic
   224×224 images already on the device, bf16 autocast, AdamW, warm-up/cosine schedule,
   clipping at 1. `ours` is `hf_negmerge.training.loop.train_loop` (the package's one loop,
   through accelerate with `mixed_precision="bf16"`, as `finetune` calls it); `bare` is a
   plain PyTorch loop doing the same work. Both run on the same batches, alternating, best of
   `--repeats`, with `torch.cuda.synchronize()` around each timing.
2. One 30-run pool extrapolated: runs × epochs × forget-set images / our images/s (the paper's
   CLIP grid: 30 runs; `--pool-epochs`, `--pool-images` describe the forget set).
3. Merge: base + N perturbed image-tower checkpoints written with `save_pretrained`, merged
   from disk by `hf_negmerge.merging.merge_checkpoints` (NegMerge), against the authors'
   reported 37 s for 30 checkpoints.

    python benchmarks/gpu_bench.py               # on a GPU machine (~15 GB disk for the merge)
    python benchmarks/gpu_bench.py --smoke       # seconds, on CPU: tiny sizes, checks it runs
    python benchmarks/gpu_bench.py --merge-only  # part 3 alone: CPU work, runs on any machine

The merge is timed twice: from the page cache (every file read once before) and after dropping
the files from it (`posix_fadvise(DONTNEED)`, so they are read from the disk). It runs with
torch's thread count as workers (set `--threads`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

AUTHORS_MERGE_SECONDS = 37.0  # the authors' reported time of a 30-checkpoint NegMerge at ViT-B/32

# openai/clip-vit-base-patch32's published config (used when the Hub cannot be reached)
CLIP_B32_TEXT = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
)
CLIP_B32_VISION = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=32,
)
CLIP_B32_PROJECTION = 512
SMOKE_VISION = dict(
    projection_dim=16,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)
SMOKE_TEXT = dict(
    projection_dim=16,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=16,
)


def clip_config(smoke: bool):
    """The ViT-B/32 CLIP config (Hub cache, else the published values), or a tiny one for --smoke."""
    from transformers import CLIPConfig

    if smoke:
        return CLIPConfig(text_config=SMOKE_TEXT, vision_config=SMOKE_VISION, projection_dim=16), "smoke"
    try:
        return CLIPConfig.from_pretrained("openai/clip-vit-base-patch32"), "hub"
    except OSError:
        config = CLIPConfig(
            text_config=CLIP_B32_TEXT, vision_config=CLIP_B32_VISION, projection_dim=CLIP_B32_PROJECTION
        )
        return config, "written from known values"


class ZeroShotImageClassifier(torch.nn.Module):
    """CLIP's image tower + projection, scored against a fixed, normalised random class head."""

    def __init__(self, config, num_classes: int, seed: int = 0) -> None:
        from transformers import CLIPVisionModelWithProjection

        super().__init__()
        torch.manual_seed(seed)
        self.tower = CLIPVisionModelWithProjection(config.vision_config)
        head = torch.nn.functional.normalize(
            torch.randn(num_classes, config.vision_config.projection_dim), dim=-1
        )
        self.register_buffer("head", head)
        self.logit_scale = 100.0

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.tower(pixel_values=pixel_values).image_embeds
        return (
            self.logit_scale
            * torch.nn.functional.normalize(features, dim=-1)
            @ self.head.T.to(features.dtype)
        )


def _batches(
    config, count: int, batch_size: int, classes: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    size = config.vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "pixel_values": torch.randn(batch_size, 3, size, size, generator=generator).to(device),
            "labels": torch.randint(0, classes, (batch_size,), generator=generator).to(device),
        }
        for _ in range(count)
    ]


def _optimizer(model: torch.nn.Module, steps: int):
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(model, batches, device, epochs: int) -> float:
    from accelerate import Accelerator

    from hf_negmerge.training.loop import train_loop

    accelerator = Accelerator(mixed_precision="bf16", cpu=device.type == "cpu")
    optimizer, scheduler = _optimizer(model, len(batches) * epochs)
    model = model.to(accelerator.device)
    optimizer = accelerator.prepare_optimizer(optimizer)
    loss_function = torch.nn.CrossEntropyLoss()

    def objective(pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # as `finetune`'s
        with accelerator.autocast():
            logits = model(pixel_values)
        return loss_function(logits.float(), labels)

    records: list[dict[str, float]] = []
    _sync(device)
    started = time.perf_counter()
    train_loop(
        model,
        list(model.parameters()),
        batches,
        objective,
        optimizer,
        scheduler,
        epochs=epochs,
        grad_clip=1.0,
        accelerator=accelerator,
        progress=False,
        step_records=records,
    )
    _sync(device)
    seconds = time.perf_counter() - started
    accelerator.free_memory()  # outside the timing: the runner calls it once per run, not per step
    return seconds


def run_bare(model, batches, device, epochs: int) -> float:
    optimizer, scheduler = _optimizer(model, len(batches) * epochs)
    model = model.to(device).train()
    parameters = list(model.parameters())
    losses = []
    _sync(device)
    started = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = model(batch["pixel_values"])
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
    torch.stack(losses).tolist()  # the loss log, as ours keeps it
    _sync(device)
    return time.perf_counter() - started


def throughput(config, args, device: torch.device) -> dict[str, float]:
    batches = _batches(config, args.steps, args.batch_size, args.classes, device)
    for runner in (run_bare, run_ours):  # kernels, allocator, lazy imports warmed before timing
        runner(ZeroShotImageClassifier(config, args.classes), batches[:2], device, 1)
    best = {"ours": float("inf"), "bare": float("inf")}
    for _ in range(args.repeats):
        for name, runner in (("bare", run_bare), ("ours", run_ours)):
            model = ZeroShotImageClassifier(config, args.classes)
            best[name] = min(best[name], runner(model, batches, device, 1))
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    images = args.steps * args.batch_size
    return {
        "ours_images_per_s": images / best["ours"],
        "bare_images_per_s": images / best["bare"],
        "ratio": best["bare"] / best["ours"],
    }


def merge(config, count: int, folder: Path) -> dict[str, float]:
    """Write base + `count` perturbed image towers, then time merge_checkpoints over them."""
    from transformers import CLIPVisionModelWithProjection

    from hf_negmerge.merging import merge_checkpoints

    torch.manual_seed(0)
    base = CLIPVisionModelWithProjection(config.vision_config)
    base.save_pretrained(folder / "base")
    state = {key: value.clone() for key, value in base.state_dict().items()}
    runs = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index + 1)
        with torch.no_grad():
            for key, parameter in base.state_dict().items():
                if parameter.is_floating_point():
                    parameter.copy_(state[key] + 1e-3 * torch.randn(parameter.shape, generator=generator))
        base.save_pretrained(folder / f"run{index:02d}")
        runs.append(folder / f"run{index:02d}")
    size = sum(path.stat().st_size for path in (folder / "base").glob("*.safetensors"))
    timings = {}
    for cache in ("warm", "cold"):
        if cache == "warm":
            _read_through(folder)
        else:
            _drop_from_page_cache(folder)
        started = time.perf_counter()
        result = merge_checkpoints(folder / "base", runs, progress=False)
        timings[cache] = time.perf_counter() - started
    return {
        "checkpoints": count,
        "checkpoint_mb": size / 2**20,
        "seconds": timings["warm"],
        "seconds_cold_cache": timings["cold"],
        "ratio_to_authors": AUTHORS_MERGE_SECONDS / timings["warm"],
        "kept_fraction": result.stats.kept_fraction,
    }


def _read_through(folder: Path) -> None:
    """Read every checkpoint file once, so the timed merge finds them in the page cache."""
    for path in folder.rglob("*.safetensors"):
        with path.open("rb", buffering=0) as handle:
            while handle.read(64 << 20):
                pass


def _drop_from_page_cache(folder: Path) -> None:
    """Write back and evict every checkpoint file, so the next merge reads them from the disk."""
    os.sync()
    for path in folder.rglob("*.safetensors"):
        with path.open("rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, CPU allowed: checks the script runs"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="the paper's CLIP batch size")
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per timed loop")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=196, help="zero-shot head rows (Cars: 196)")
    parser.add_argument("--pool-runs", type=int, default=30)
    parser.add_argument("--pool-epochs", type=int, default=70, help="CLIP_EPOCHS_BY_DATASET: Cars 70")
    parser.add_argument(
        "--pool-images", type=int, default=8144, help="forget-set images per epoch (Cars train)"
    )
    parser.add_argument("--checkpoints", type=int, default=30)
    parser.add_argument(
        "--merge-only", action="store_true", help="only part 3, the merge (CPU work: any machine)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (merge workers)")
    parser.add_argument(
        "--folder", type=Path, default=None, help="where the merge checkpoints go (temporary)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.batch_size, args.steps, args.repeats, args.classes, args.checkpoints = 8, 3, 1, 10, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge_only:
        config, config_source = clip_config(args.smoke)
        with tempfile.TemporaryDirectory(dir=args.folder) as folder:
            merged = merge(config, args.checkpoints, Path(folder))
        print(json.dumps({"config": config_source, "torch_threads": torch.get_num_threads(), **merged}))
        print(_merge_line(merged))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("No GPU: run with --smoke to check the script, or on a GPU machine for the figures.")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    config, config_source = clip_config(args.smoke)
    speed = throughput(config, args, device)
    pool_images = args.pool_runs * args.pool_epochs * args.pool_images
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        merged = merge(config, args.checkpoints, Path(folder))
    row = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "config": config_source,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "batch_size": args.batch_size,
        **speed,
        "pool_hours_ours": pool_images / speed["ours_images_per_s"] / 3600,
        "pool_hours_bare": pool_images / speed["bare_images_per_s"] / 3600,
        "merge": merged,
    }
    print(json.dumps(row, indent=2))
    print(
        f"\nfine-tuning ({config_source}, batch {args.batch_size}, bf16): ours {speed['ours_images_per_s']:.1f} "
        f"images/s, bare {speed['bare_images_per_s']:.1f} images/s, ratio {speed['ratio']:.3f}"
    )
    print(
        f"one {args.pool_runs}-run pool ({args.pool_epochs} epochs × {args.pool_images} images): "
        f"{row['pool_hours_ours']:.2f} h with ours, {row['pool_hours_bare']:.2f} h bare (extrapolated)"
    )
    print(_merge_line(merged))


def _merge_line(merged: dict[str, float]) -> str:
    return (
        f"merge of {merged['checkpoints']} checkpoints ({merged['checkpoint_mb']:.0f} MB each, "
        f"{torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.2f}): {merged['seconds']:.2f} s "
        f"from the page cache, {merged['seconds_cold_cache']:.2f} s from the disk (authors' reported "
        f"{AUTHORS_MERGE_SECONDS:.0f} s for 30 at ViT-B/32: {merged['ratio_to_authors']:.2f}× from the cache)"
    )


if __name__ == "__main__":
    main()
