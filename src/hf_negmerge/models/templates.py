"""Prompt template sets for the CLIP zero-shot head, per forget set of the paper's CLIP setting.

These are the CLIP-paper prompt ensembles that the task-vectors / NegMerge code uses for its
eight forget sets; zero-shot accuracy, and so the forget numbers, depend on them. "{}" is the
class name. The control set ImageNet has its own: OpenAI's 80 templates and 1000 curated class
names ("tench", "goldfish", ...), shipped as data in `imagenet_openai.json` (its "source" field
says where they were copied from).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import DEFAULT_PROMPT_TEMPLATES

_IMAGENET_OPENAI = json.loads((Path(__file__).parent / "imagenet_openai.json").read_text(encoding="utf-8"))


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
    "imagenet": list(_IMAGENET_OPENAI["templates"]),
}

# Class-name presets for a zero-shot head, one name per label id (the words put into the prompts).
CLASS_NAME_SETS: dict[str, list[str]] = {"imagenet": list(_IMAGENET_OPENAI["class_names"])}


def _preset_key(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    return {"stanfordcars": "cars", "svhncropped": "svhn", "imagenet1k": "imagenet"}.get(key, key)


def prompt_templates_for(dataset: str) -> list[str]:
    """The prompt ensemble for a forget set (case-insensitive: "Cars", "EuroSAT", ...)."""
    key = _preset_key(dataset)
    if key not in PROMPT_TEMPLATE_SETS:
        raise ConfigError(f"No prompt template set for {dataset!r}; known: {sorted(PROMPT_TEMPLATE_SETS)}.")
    return list(PROMPT_TEMPLATE_SETS[key])


def resolve_prompt_templates(value: Any, key: str) -> list[str] | None:
    """A template list from a recipe value: a preset name, a list with one '{}' each, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        if _preset_key(value) not in PROMPT_TEMPLATE_SETS:
            raise ConfigError(
                f"{key}={value!r} is not a prompt template set; known: {sorted(PROMPT_TEMPLATE_SETS)} "
                "(or give a list of templates with '{}')."
            )
        return prompt_templates_for(value)
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key} must be a preset name or a non-empty list of templates, got {value!r}.")
    bad = [template for template in value if not isinstance(template, str) or template.count("{}") != 1]
    if bad:
        raise ConfigError(
            f"{key}: templates {bad!r} must be strings with exactly one '{{}}' for the class name."
        )
    return list(value)


def resolve_class_name_set(value: Any, key: str) -> list[str] | None:
    """Prompt class names from a recipe value: a preset name, a list of non-empty strings, or None.

    Repeats are allowed: they are words, not labels (OpenAI's ImageNet names repeat two).
    """
    if value is None:
        return None
    if isinstance(value, str):
        if _preset_key(value) not in CLASS_NAME_SETS:
            raise ConfigError(
                f"{key}={value!r} is not a class-name set; known: {sorted(CLASS_NAME_SETS)} (or give a list)."
            )
        return list(CLASS_NAME_SETS[_preset_key(value)])
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key} must be a preset name or a non-empty list of names, got {value!r}.")
    bad = [name for name in value if not isinstance(name, str) or not name.strip()]
    if bad:
        raise ConfigError(f"{key}: names must be non-empty strings, got {bad!r}.")
    return list(value)
