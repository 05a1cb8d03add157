"""Train the built-in default recipe's θ₀ and ship it as package data.

The default run (`hf-negmerge unlearn`, one torch thread) would otherwise spend most of a cold run
training θ₀. This trains it once with the run's own θ₀ stage (`originals.prepare_original`, with
an empty cache and the packaged copy ignored) at one torch thread, and
writes `src/hf_negmerge/packaged_originals/<arch>-<key>/` (`training/packaged.py`). A run uses that folder
only when its θ₀ cache key equals the folder's key exactly; `tests/test_packaged_original.py`
checks that the default recipe's key still resolves to it, so rerun this script after any change
to the default recipe, its data or θ₀'s training code (and delete the stale folder).

    OMP_NUM_THREADS=1 python scripts/build_default_original.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=None, help="recipe name or file (default: the built-in default)")
    parser.add_argument(
        "--destination", type=Path, default=None, help="default: the package's packaged_originals/"
    )
    args = parser.parse_args()

    from hf_negmerge.data import build_unlearning_data
    from hf_negmerge.originals import model_label_names, prepare_original
    from hf_negmerge.recipe import load_recipe
    from hf_negmerge.threads import configure_torch_threads
    from hf_negmerge.training.packaged import write_packaged_original

    threads = configure_torch_threads()
    if threads != 1:
        raise SystemExit(
            f"OMP_NUM_THREADS={threads}: the packaged θ₀ is built at one thread (the default run's)."
        )
    with tempfile.TemporaryDirectory() as cache:
        # the run's own θ₀ stage, with an empty cache and the packaged copy ignored: what a run trains
        recipe = load_recipe(args.recipe, [f"original.cache_dir={cache}"])
        if not recipe.original.train or recipe.original.path is not None:
            raise SystemExit(
                "This recipe does not train θ₀ (original.train is false or original.path is set)."
            )
        data = build_unlearning_data(recipe.data, model_label_names(recipe))
        trained = prepare_original(recipe, data, Path(cache), progress=True, use_packaged=False)
        target = write_packaged_original(trained, "scripts/build_default_original.py", args.destination)
    size = sum(path.stat().st_size for path in target.iterdir())
    print(f"wrote {target} ({size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
