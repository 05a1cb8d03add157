"""Benchmark: streaming NegMerge from disk against the read floor and load-everything merges.

Builds a ViT from a config (hidden 768, 6 layers by default: ≈44M float32 parameters, 167 MiB
per checkpoint), writes a base and N randomly perturbed copies with `save_pretrained` under a
temporary folder, then times and measures the peak RSS of each method, each in a FRESH
interpreter so one method's peak cannot leak into another's:

* ``read``  — the floor: a plain read of every file (base + N runs) through the same
  safetensors library (``safe_open(..., backend="pread").get_tensor`` for every key), nothing
  computed; ``ours/read`` is ours' throughput over the same bytes as a fraction of it;
* ``alloc`` — not a merge: allocating and first touching one merged vector's worth of float32
  (what any merge must write, and a plain read need not), to show that share of the gap;
* ``ours``  — ``hf_negmerge.merging.merge_checkpoints`` (tensor by tensor from disk; NegMerge's
  compiled fold where it was built, see the ``kernel`` field of each row);
* ``ours-torch`` — the same call with ``HF_NEGMERGE_KERNEL=0``: the generic torch fold;
* ``naive`` — what a straightforward implementation does: load every state dict with
  ``safetensors.torch.load_file``, keep all task vectors, then per key ``torch.stack``, sign,
  unanimous mask, mean;
* ``peft``  — ``peft.utils.merge_utils.ties(..., density=1.0, majority_sign_method="total")``
  key by key over task tensors made from fully loaded state dicts;
* ``ours-baseline`` — ``merge_checkpoints`` of another version (``--baseline-src``), e.g. to
  compare two readers or merge cores in one run.

Correctness is checked in the same run: ours must equal naive and ours-torch (``torch.allclose``;
the maximum difference is printed), and peft must equal ours wherever ours kept an element
(unanimous elements are a subset of TIES' majority with the same mean).

    python benchmarks/merge_bench.py --threads 2 --repeats 3   # N = 2, 8, 16 (≈3 GB disk)
    python benchmarks/merge_bench.py --layers 12 --sizes 2,8,30  # ViT-B size (≈11 GB disk)
    python benchmarks/merge_bench.py --quick         # seconds: tiny ViT, N = 2, 4
    python benchmarks/merge_bench.py --methods ours,ours-baseline --baseline-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

WEIGHTS = "model.safetensors"
MB = 1024 * 1024

# ---------------------------------------------------------------------------------------------
# Work done inside the fresh worker interpreters
# ---------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """High-water mark of this process's resident set (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _generate(spec: dict) -> dict:
    """Write the base and `count` perturbed copies: τᵢ = shared + own noise, so some signs agree."""
    import torch
    from tqdm.auto import tqdm
    from transformers import ViTConfig, ViTModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar per save_pretrained would drown ours

    torch.manual_seed(spec["seed"])
    config = ViTConfig(
        hidden_size=spec["hidden_size"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        intermediate_size=spec["intermediate_size"],
    )
    model = ViTModel(config).eval()
    root = Path(spec["workdir"])
    model.save_pretrained(root / "base")
    params = [p for p in model.parameters() if p.is_floating_point()]
    base = [p.detach().clone() for p in params]
    scale = spec["sigma"]
    shared = [torch.randn_like(p) * scale for p in params]
    with torch.no_grad():
        for index in tqdm(range(spec["count"]), desc="writing checkpoints", unit="ckpt"):
            for param, original, common in zip(params, base, shared, strict=True):
                param.copy_(original).add_(common).add_(torch.randn_like(param), alpha=scale)
            model.save_pretrained(root / f"ft{index:02d}")
    return {"parameters": sum(p.numel() for p in params), "bytes": (root / "base" / WEIGHTS).stat().st_size}


def _float_keys(state: dict) -> list[str]:
    return [key for key, value in state.items() if value.is_floating_point()]


def _run_ours(base: str, finetuned: list[str]) -> dict:
    from hf_negmerge.config import NegMergeConfig
    from hf_negmerge.merging import merge_checkpoints

    return merge_checkpoints(base, finetuned, NegMergeConfig(), progress=False).task_vector.tensors


def _run_ours_torch(base: str, finetuned: list[str]) -> dict:
    """The same call with the compiled fold switched off: the generic torch fold."""
    from hf_negmerge.merging.kernel import KERNEL_ENV

    os.environ[KERNEL_ENV] = "0"
    return _run_ours(base, finetuned)


def _load_task_vectors(base: str, finetuned: list[str]) -> tuple[list[str], list[dict]]:
    """Every checkpoint loaded whole; all N task vectors kept in memory (O(N·P))."""
    from safetensors.torch import load_file

    base_state = load_file(Path(base) / WEIGHTS)
    keys = _float_keys(base_state)
    vectors = []
    for folder in finetuned:
        tuned = load_file(Path(folder) / WEIGHTS)
        vectors.append({key: tuned[key] - base_state[key] for key in keys})
        del tuned
    return keys, vectors


def _run_read(base: str, finetuned: list[str]) -> dict:
    """The floor: every tensor of every file read once through the library, nothing kept."""
    from safetensors import safe_open

    for folder in (base, *finetuned):
        handle = safe_open(str(Path(folder) / WEIGHTS), framework="pt", backend="pread")
        for key in handle.offset_keys():
            handle.get_tensor(key)
    return {}


def _run_alloc(base: str, finetuned: list[str]) -> dict:
    """What a merge must pay that a read does not: one merged vector's memory, first touched."""
    import torch
    from safetensors import safe_open

    handle = safe_open(str(Path(base) / WEIGHTS), framework="pt", backend="pread")
    sizes = {key: handle.get_slice(key).get_shape() for key in handle.offset_keys()}
    return {key: torch.zeros(shape) for key, shape in sizes.items()}


def _run_naive(base: str, finetuned: list[str]) -> dict:
    import torch

    keys, vectors = _load_task_vectors(base, finetuned)
    count = len(vectors)
    merged = {}
    for key in keys:
        stacked = torch.stack([vector[key] for vector in vectors])
        unanimous = torch.sign(stacked).sum(dim=0).abs() == count
        merged[key] = torch.where(unanimous, stacked.mean(dim=0), torch.zeros((), dtype=stacked.dtype))
    return merged


def _run_peft(base: str, finetuned: list[str]) -> dict:
    import warnings

    import torch
    from peft.utils.merge_utils import ties
    from safetensors.torch import load_file

    warnings.filterwarnings("ignore", message="The density")  # density=1.0 warns on every call
    base_state = load_file(Path(base) / WEIGHTS)
    states = [load_file(Path(folder) / WEIGHTS) for folder in finetuned]
    weights = torch.ones(len(states))
    merged = {}
    for key in _float_keys(base_state):
        task_tensors = [state[key] - base_state[key] for state in states]
        merged[key] = ties(task_tensors, weights, density=1.0, majority_sign_method="total")
    return merged


METHODS: dict[str, Callable[[str, list[str]], dict]] = {
    "read": _run_read,
    "alloc": _run_alloc,
    "ours": _run_ours,
    "ours-torch": _run_ours_torch,
    "ours-baseline": _run_ours,  # the same call, importing hf_negmerge from --baseline-src
    "naive": _run_naive,
    "peft": _run_peft,
}

#: methods that produce no merge (nothing to check for correctness)
NOT_MERGES = ("read", "alloc")

# modules each method needs, imported before the clock starts so import cost is not timed
METHOD_IMPORTS: dict[str, tuple[str, ...]] = {
    "read": ("safetensors",),
    "alloc": ("safetensors",),
    "ours": ("hf_negmerge.merging",),
    "ours-torch": ("hf_negmerge.merging",),
    "ours-baseline": ("hf_negmerge.merging",),
    "naive": ("safetensors.torch",),
    "peft": ("peft.utils.merge_utils", "safetensors.torch"),
}


def _measure(spec: dict) -> dict:
    import importlib

    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(spec["threads"])
    for module in METHOD_IMPORTS[spec["method"]]:
        importlib.import_module(module)
    package = sys.modules.get("hf_negmerge")
    kernel = sys.modules.get("hf_negmerge.merging.kernel")
    imported_rss = _peak_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    merged = METHODS[spec["method"]](spec["base"], spec["finetuned"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _peak_rss_mb()  # taken before saving: writing the result must not count
    kept = sum(int(torch.count_nonzero(value)) for value in merged.values())
    numel = sum(value.numel() for value in merged.values())
    if spec.get("result") and merged and spec["method"] not in NOT_MERGES:
        save_file({key: value.contiguous() for key, value in merged.items()}, spec["result"])
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "load_avg": os.getloadavg()[0],
        "peak_rss_mb": peak,
        "imported_rss_mb": imported_rss,
        "kept": kept,
        "numel": numel,
        "package": str(Path(package.__file__).parent) if package else None,
        "kernel": kernel.kernel_available() if kernel else None,  # after the run: ours-torch sets the switch
    }


def _idle(spec: dict) -> dict:
    import torch  # noqa: F401  (the point: the RSS of an interpreter that has imported torch)

    return {"peak_rss_mb": _peak_rss_mb()}


def _compare(spec: dict) -> dict:
    """Ours vs naive: allclose on every key; peft vs ours: equal wherever ours kept an element."""
    import torch
    from safetensors.torch import load_file

    reference = load_file(spec["reference"])
    report = {}
    for name, path in spec["others"].items():
        other = load_file(path)
        if set(other) != set(reference):
            report[name] = {"ok": False, "why": f"keys differ: {sorted(set(other) ^ set(reference))[:5]}"}
            continue
        worst, bad = 0.0, []
        for key, expected in reference.items():
            actual = other[key]
            if spec["mode"][name] == "kept_only":
                kept = expected != 0
                expected, actual = expected[kept], actual[kept]
            worst = max(worst, float((actual - expected).abs().max()) if expected.numel() else 0.0)
            if not torch.allclose(actual, expected, rtol=1e-5, atol=1e-7):
                bad.append(key)
        report[name] = {"ok": not bad, "max_abs_diff": worst, "mismatched_keys": bad[:5]}
    return report


WORKER_TASKS: dict[str, Callable[[dict], dict]] = {
    "generate": _generate,
    "measure": _measure,
    "idle": _idle,
    "compare": _compare,
}

# ---------------------------------------------------------------------------------------------
# The orchestrating parent: never imports torch, so it stays small while workers run
# ---------------------------------------------------------------------------------------------


def _spawn(task: str, source: Path | None = None, **spec: object) -> dict:
    """Run one worker task in a fresh interpreter; its last stdout line is the JSON answer.

    `source`: a `src` folder put first on PYTHONPATH, so the worker imports that hf_negmerge.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({"task": task, **spec})]
    env = None
    if source is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"worker '{task}' failed with exit code {completed.returncode}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def _set_cache(paths: list[Path], warm: bool) -> None:
    """Warm: read the files once so every method starts from the page cache. Cold: drop them."""
    for path in paths:
        with path.open("rb", buffering=0) as handle:
            if warm:
                while handle.read(64 * MB):
                    pass
            else:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"--sizes needs positive integers, got {text!r}")
    return sizes


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=_parse_sizes, default=[2, 8, 16], help="numbers of checkpoints N")
    parser.add_argument("--hidden-size", type=int, default=768, help="ViT hidden size (ViT-B: 768)")
    parser.add_argument("--layers", type=int, default=6, help="ViT layers (ViT-B: 12; default 6, 167 MiB)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default hidden/64)")
    parser.add_argument("--intermediate-size", type=int, default=None, help="MLP size (default 4×hidden)")
    parser.add_argument(
        "--methods", default="read,alloc,naive,ours,ours-torch", help="comma-separated: " + ", ".join(METHODS)
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each method per N, interleaved; medians reported"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: hidden 64, 2 layers, N = 2, 4")
    parser.add_argument(
        "--cache", choices=("warm", "cold"), default="warm", help="page cache before each run"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per worker")
    parser.add_argument("--sigma", type=float, default=1e-3, help="scale of the random perturbations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where checkpoints go (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints after the run")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument(
        "--memory-margin-mb",
        type=float,
        default=2048,
        help="skip a load-everything run that would leave less",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="a src/ folder of another hf-negmerge version for the 'ours-baseline' method "
        "(e.g. from `git archive COMMIT src | tar -x -C /tmp/old`)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden_size, args.layers, args.sizes = 64, 2, [2, 4]
    args.heads = args.heads or max(1, args.hidden_size // 64)
    args.intermediate_size = args.intermediate_size or 4 * args.hidden_size
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if "ours-baseline" in args.methods and args.baseline_src is None:
        parser.error("method 'ours-baseline' needs --baseline-src")
    if args.hidden_size % args.heads:
        parser.error(f"--hidden-size {args.hidden_size} is not divisible by {args.heads} heads")
    return args


def _estimated_mb(method: str, count: int, checkpoint_mb: float) -> float:
    """Rough RAM a method needs: the load-everything paths hold N + 1 models plus one stack."""
    return (count + 2) * checkpoint_mb if method in ("naive", "peft") else 3 * checkpoint_mb


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _summarise(runs: list[dict]) -> dict:
    """One row from a method's repeats: median wall and CPU time, the highest peak RSS."""
    first = runs[0]
    return {
        **first,
        "wall_s": _median([run["wall_s"] for run in runs]),
        "cpu_s": _median([run["cpu_s"] for run in runs]),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "load_avg": _median([run["load_avg"] for run in runs]),
        "walls": [round(run["wall_s"], 3) for run in runs],
    }


def _table(rows: list[dict], idle_mb: float, checkpoint_mb: float) -> str:
    """Medians per N and method; `GB/s` is the input (base + N files) over wall time."""
    header = (
        f"{'N':>3}  {'method':<13} {'wall s':>8} {'cpu s':>8} {'GB/s':>6} {'peak RSS MB':>12} "
        f"{'(RSS-idle)/ckpt':>16} {'load':>5} {'ours/read':>10} {'naive/ours':>11}"
    )
    lines = [header, "-" * len(header)]
    wall = {(row["n"], row["method"]): row["wall_s"] for row in rows if "wall_s" in row}
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['n']:>3}  {row['method']:<13} skipped: {row['skipped']}")
            continue
        count, read_ratio, naive_ratio = row["n"], "", ""
        if row["method"].startswith("ours") and (count, "read") in wall:
            read_ratio = f"{wall[count, 'read'] / row['wall_s']:.2f}"
        if row["method"].startswith("ours") and (count, "naive") in wall:
            naive_ratio = f"{wall[count, 'naive'] / row['wall_s']:.2f}x"
        throughput = (
            ""
            if row["method"] == "alloc"
            else f"{(count + 1) * checkpoint_mb * MB / row['wall_s'] / 1e9:.2f}"
        )
        lines.append(
            f"{count:>3}  {row['method']:<13} {row['wall_s']:>8.3f} {row['cpu_s']:>8.3f} {throughput:>6} "
            f"{row['peak_rss_mb']:>12.0f} {(row['peak_rss_mb'] - idle_mb) / checkpoint_mb:>16.2f} "
            f"{row['load_avg']:>5.2f} {read_ratio:>10} {naive_ratio:>11}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.worker is not None:
        spec = json.loads(args.worker)
        print(json.dumps(WORKER_TASKS[spec["task"]](spec)))
        return 0

    largest = max(args.sizes)
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="negmerge-bench-", dir=parent))
    try:
        params_estimate = 12 * args.layers * args.hidden_size**2
        needed_gb = (largest + 1) * 4 * params_estimate / 1024**3 * 1.1 + 3 * 4 * params_estimate / 1024**3
        free_gb = shutil.disk_usage(root).free / 1024**3
        if needed_gb > free_gb:
            raise SystemExit(
                f"{root} has {free_gb:.1f} GB free; {largest + 1} checkpoints need ≈{needed_gb:.1f} GB"
            )
        print(f"workdir {root}: {free_gb:.1f} GB free, needs ≈{needed_gb:.1f} GB", flush=True)
        generated = _spawn(
            "generate",
            workdir=str(root),
            count=largest,
            hidden_size=args.hidden_size,
            layers=args.layers,
            heads=args.heads,
            intermediate_size=args.intermediate_size,
            sigma=args.sigma,
            seed=args.seed,
        )
        checkpoint_mb = generated["bytes"] / MB
        idle_mb = _spawn("idle")["peak_rss_mb"]
        print(
            f"model: ViT hidden {args.hidden_size}, {args.layers} layers, {generated['parameters']:,} float "
            f"parameters, checkpoint {checkpoint_mb:.1f} MB; idle interpreter with torch: {idle_mb:.0f} MB; "
            f"cache {args.cache}; torch threads {args.threads}; repeats {args.repeats}; "
            f"load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        rows: list[dict] = []
        checks: dict[int, dict] = {}
        for count in args.sizes:
            finetuned = [str(root / f"ft{index:02d}") for index in range(count)]
            files = [root / "base" / WEIGHTS, *(Path(folder) / WEIGHTS for folder in finetuned)]
            results: dict[str, str] = {}
            measured: dict[str, list[dict]] = {}
            for repeat in range(args.repeats):
                for method in args.methods:
                    need = _estimated_mb(method, count, checkpoint_mb)
                    available = _available_mb()
                    if need > available - args.memory_margin_mb:
                        print(
                            f"N={count} {method}: skipped, needs ≈{need:.0f} MB, {available:.0f} MB available"
                        )
                        continue
                    _set_cache(files, warm=args.cache == "warm")
                    keep_result = repeat == 0 and method not in NOT_MERGES
                    result = root / f"result-{method}-{count}.safetensors"
                    run = _spawn(
                        "measure",
                        source=args.baseline_src if method == "ours-baseline" else None,
                        method=method,
                        base=str(root / "base"),
                        finetuned=finetuned,
                        result=str(result) if keep_result else None,
                        threads=args.threads,
                    )
                    if keep_result:
                        results[method] = str(result)
                    measured.setdefault(method, []).append(run)
                    print(
                        {"n": count, "method": method, "repeat": repeat}
                        | {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()},
                        flush=True,
                    )
            for method in args.methods:
                if method in measured:
                    rows.append({"n": count, "method": method, **_summarise(measured[method])})
                else:
                    rows.append({"n": count, "method": method, "skipped": "not enough memory"})
            if "ours" in results and len(results) > 1:  # correctness, from the first repeat
                others = {name: path for name, path in results.items() if name != "ours"}
                mode = {name: ("kept_only" if name == "peft" else "all") for name in others}
                checks[count] = _spawn("compare", reference=results["ours"], others=others, mode=mode)
                print(f"N={count} correctness vs ours: {checks[count]}", flush=True)
            for path in results.values():
                Path(path).unlink(missing_ok=True)
        print()
        print(_table(rows, idle_mb, checkpoint_mb))
        kept = {
            row["n"]: row["kept"] / row["numel"] for row in rows if row["method"] == "ours" and "kept" in row
        }
        print("kept fraction (ours): " + ", ".join(f"N={n}: {100 * value:.2f}%" for n, value in kept.items()))
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "rows": rows,
                        "checks": checks,
                        "idle_rss_mb": idle_mb,
                        "checkpoint_mb": checkpoint_mb,
                        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    },
                    indent=2,
                )
            )
        failed = [n for n, report in checks.items() if not all(entry["ok"] for entry in report.values())]
        if failed:
            print(f"CORRECTNESS FAILED for N = {failed}", file=sys.stderr)
            return 1
        return 0
    finally:
        if args.keep:
            print(f"checkpoints kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
