"""Local paths as the tool writes them into files it publishes: never absolute.

`metrics.json`, `recipe.yaml`, `report.md`, the model card and the trials summary end up on the
Hub (`hf-negmerge push`), so they must not carry the user's home folder, user name or folder
layout. A path the user gave relative stays as given (it names nothing outside what they
typed); an absolute one is written relative to the output folder, or as `~/…` under the home
folder. Hub ids and other text are left alone.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

_OVERRIDE = re.compile(r"^([\w.\-]+)=(.*)$", re.DOTALL)  # a recipe override, key=value


def portable_path(path: str, output_dir: str | Path) -> str:
    """`path` relative to `output_dir` (or `~/…` under the home folder) when it is absolute."""
    if not os.path.isabs(path):
        return path
    absolute = Path(os.path.abspath(path))
    folder = Path(os.path.abspath(output_dir))
    if absolute.is_relative_to(folder):
        return absolute.relative_to(folder).as_posix() or "."
    home = Path(os.path.abspath(Path.home()))
    if absolute.is_relative_to(home) and not folder.is_relative_to(home):
        return "~/" + absolute.relative_to(home).as_posix()
    return Path(os.path.relpath(absolute, folder)).as_posix()


def _portable_text(text: str, output_dir: str | Path) -> str:
    override = _OVERRIDE.match(text)
    if override is None:
        return portable_path(text, output_dir)
    key, value = override.groups()
    try:
        quoted = json.loads(value)  # `unlearn --output-dir` passes its value JSON-quoted
    except ValueError:
        return f"{key}={portable_path(value, output_dir)}"
    if isinstance(quoted, str):
        return f"{key}={json.dumps(portable_path(quoted, output_dir))}"
    return text


def portable_paths(value: Any, output_dir: str | Path) -> Any:
    """`value` (strings, lists, dicts, as in a recipe) with every absolute path made portable;
    `key=/abs/path` overrides too."""
    if isinstance(value, str):
        return _portable_text(value, output_dir)
    if isinstance(value, Path):
        return portable_path(str(value), output_dir)
    if isinstance(value, dict):
        return {key: portable_paths(item, output_dir) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable_paths(item, output_dir) for item in value]
    return value
