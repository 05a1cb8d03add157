"""The packaged recipe files: where they live and their names.

Kept apart from `recipe.py` (which validates recipes against the data, model and training
configs, and so imports torch) so the command line can list recipes in `--help` cheaply.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = "default"


def available_recipes() -> list[str]:
    """Names of the packaged recipes (accelerate launch configs live beside them and are skipped)."""
    return sorted(
        str(path.relative_to(BUILTIN_RECIPES_DIR).with_suffix(""))
        for path in BUILTIN_RECIPES_DIR.rglob("*.yaml")
        if path.parent.name != "accelerate"
    )
