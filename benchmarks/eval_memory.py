"""Benchmark: peak memory of the evaluation's encode + predict path against the size of a split.

Builds a tiny ViT from a config (224 px, patch 32, hidden 32) and a synthetic split of N images
(written lazily by a generator into an Arrow cache in a temporary folder), then, in a FRESH
interpreter per (N, path), encodes the split once with `hf_negmerge.data.encode_split` and scores
it `--passes` times with `hf_negmerge.evaluation.predict.predict`, as the λ search does, and
prints the peak RSS (`resource.getrusage(...).ru_maxrss`):

* ``memory``  — the split's pixels held in one float32 tensor (in-memory budget unlimited);
* ``bounded`` — the pixels written batch by batch to a file and read back batch by batch
  (in-memory budget 0), what evaluation does for splits past `engine.IN_MEMORY_PIXEL_BYTES`.

Both paths must give the same predictions; each child prints a digest of its logits to compare.

    python benchmarks/eval_memory.py                    # N = 800, 4800; one thread
    python benchmarks/eval_memory.py --sizes 800,4800,9600 --threads 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

PATHS = {"memory": 2**62, "bounded": 0}  # in-memory budget in bytes


def synthetic_split(count: int, cache_dir: str):
    """N small images (resized to 224 px by the processor), made one at a time by a generator."""
    import datasets
    import numpy as np
    import PIL.Image

    def rows():
        for index in range(count):
            rng = np.random.default_rng(index)
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            yield {"image": PIL.Image.fromarray(pixels), "label": index % 10}

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_generator(rows, features=features, cache_dir=cache_dir)


class TinyViT:
    """A 224 px ViT classifier from a config, with the processor's preprocessing."""

    def __init__(self) -> None:
        import torch
        from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

        torch.manual_seed(0)
        config = ViTConfig(
            image_size=224,
            patch_size=32,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_labels=10,
        )
        self.model = ViTForImageClassification(config).eval()
        self.processor = ViTImageProcessor(size={"height": 224, "width": 224})

    def preprocess(self, images):
        return self.processor(images, return_tensors="pt")["pixel_values"]


def child(count: int, path: str, batch_size: int, passes: int, threads: int) -> dict:
    import torch

    from hf_negmerge.data import encode_split
    from hf_negmerge.data.pixel_file import PixelFile
    from hf_negmerge.evaluation.predict import predict

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="eval-memory-") as folder:
        split = synthetic_split(count, os.path.join(folder, "arrow"))
        classifier = TinyViT()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        encoded = encode_split(classifier, split, "synthetic", batch_size, folder, PATHS[path])
        digest = hashlib.sha256()
        for _ in range(passes):
            predictions = predict(classifier.model, encoded.batches(batch_size), keep_logits=True)
        digest.update(predictions.logits.numpy().tobytes())
        return {
            "n": count,
            "path": path,
            "on_disk": isinstance(encoded.pixel_values, PixelFile),
            "rss_before_encode_mib": before / 1024,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "logits_sha256": digest.hexdigest()[:16],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="800,4800", help="comma-separated split sizes N")
    parser.add_argument("--batch-size", type=int, default=256, help="evaluation.batch_size (recipe default)")
    parser.add_argument("--passes", type=int, default=3, help="predict passes over the split (λ points)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("N", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(child(int(args.child[0]), args.child[1], args.batch_size, args.passes, args.threads))
        )
        return
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"threads={args.threads} batch_size={args.batch_size} passes={args.passes}")
    print(f"{'N':>6} {'path':>8} {'on disk':>8} {'RSS before encode':>18} {'peak RSS':>10}  logits")
    for count in [int(size) for size in args.sizes.split(",")]:
        for path in PATHS:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", str(count), path]
            command += ["--batch-size", str(args.batch_size), "--passes", str(args.passes)]
            command += ["--threads", str(args.threads)]
            output = subprocess.run(command, env=environment, check=True, capture_output=True, text=True)
            row = json.loads(output.stdout.strip().splitlines()[-1])
            print(
                f"{row['n']:>6} {row['path']:>8} {row['on_disk']!s:>8} "
                f"{row['rss_before_encode_mib']:>14.0f} MiB {row['peak_rss_mib']:>6.0f} MiB  "
                f"{row['logits_sha256']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
