"""Prompt template sets for the CLIP zero-shot head, per forget set of the paper's CLIP setting.

These are the CLIP-paper prompt ensembles that the task-vectors / NegMerge code uses for its
eight forget sets; zero-shot accuracy, and so the forget numbers, depend on them. "{}" is the
class name.
"""

from __future__ import annotations

from ..errors import ConfigError
from .config import DEFAULT_PROMPT_TEMPLATES


def _with_articles(pattern: str) -> list[str]:
    """`pattern` with "{}", "a {}" and "the {}" in turn (the satellite-style ensembles)."""
    return [pattern.replace("{}", form) for form in ("{}", "a {}", "the {}")]


PROMPT_TEMPLATE_SETS: dict[str, list[str]] = {
    "default": list(DEFAULT_PROMPT_TEMPLATES),
    "cars": [
        "a photo of a {}.",
        "a photo of the {}.",
        "a photo of my {}.",
        "i love my {}!",
        "a photo of my dirty {}.",
        "a photo of my clean {}.",
        "a photo of my new {}.",
        "a photo of my old {}.",
    ],
    "dtd": [
        f"a photo of {article} {{}} {noun}."
        for article in ("a", "the")
        for noun in ("texture", "pattern", "thing", "object")
    ],
    "eurosat": _with_articles("a centered satellite photo of {}."),
    "gtsrb": [
        'a zoomed in photo of a "{}" traffic sign.',
        'a centered photo of a "{}" traffic sign.',
        'a close up photo of a "{}" traffic sign.',
    ],
    "mnist": ['a photo of the number: "{}".'],
    "resisc45": [
        template
        for article in ("{}", "a {}", "the {}")
        for template in (
            f"{source} {kind} of {article}."
            for kind in ("imagery", "photo", "view")
            for source in ("satellite", "aerial")
        )
    ],
    "sun397": ["a photo of a {}.", "a photo of the {}."],
    "svhn": ['a photo of the number: "{}".'],
}


def prompt_templates_for(dataset: str) -> list[str]:
    """The prompt ensemble for a forget set (case-insensitive: "Cars", "EuroSAT", ...)."""
    key = dataset.strip().lower().replace("-", "").replace("_", "")
    aliases = {"stanfordcars": "cars", "svhncropped": "svhn"}
    key = aliases.get(key, key)
    if key not in PROMPT_TEMPLATE_SETS:
        raise ConfigError(f"No prompt template set for {dataset!r}; known: {sorted(PROMPT_TEMPLATE_SETS)}.")
    return list(PROMPT_TEMPLATE_SETS[key])
