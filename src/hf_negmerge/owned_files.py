"""Which files of an earlier output folder the tool wrote, so `--overwrite` replaces only those.

The marker `atomic_output_dir` writes lists every file of the folder with its sha256, size and
modification time. A later run compares the folder against it: an entry the marker does not list
was put there by the user, and a listed file whose content differs was edited since. Neither may
be replaced: the user's entries are carried into the new output, an edited file stops the run.
Size and time are compared first, so an unchanged folder is checked without reading its files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputError

MARKER_TOOL = "hf-negmerge"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: Path) -> dict[str, Any]:
    """What the marker records of one file: its sha256, and size and time for a cheap recheck."""
    info = path.lstat()
    return {"sha256": sha256_of(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _records(folder: Path, marker: str) -> dict[str, dict[str, Any] | None] | None:
    """The marker's files (relative path -> identity; None where it recorded no hash).

    None for a marker that lists no files (a model's own metadata file used as the marker);
    an unreadable marker of this tool is an error, since without it no file can be told apart.
    """
    path = folder / marker
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OutputError(
            f"{path} cannot be read ({error}); it records which files of {folder} hf-negmerge wrote, so "
            "nothing there can be replaced. Restore it, or choose another output folder."
        ) from error
    if not isinstance(record, dict) or record.get("written_by") != MARKER_TOOL:
        return None
    files, identities = record.get("files"), record.get("written", {})
    if not isinstance(files, list) or not isinstance(identities, dict):
        raise OutputError(f"{path} is not a valid hf-negmerge marker ('files' must be a list).")
    return {str(name): identities.get(name) for name in files}


def _unchanged(path: Path, identity: dict[str, Any] | None) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode):
        return False
    if identity is None:  # a marker without hashes: a listed regular file counts as the tool's
        return True
    if info.st_size != identity.get("size"):
        return False
    return info.st_mtime_ns == identity.get("mtime_ns") or sha256_of(path) == identity.get("sha256")


@dataclass(frozen=True)
class Ownership:
    """An earlier output compared with its marker: relative paths, folders as a whole."""

    added: list[str]  # entries the tool did not write (files, folders, links)
    changed: list[str]  # files the tool wrote whose content changed since


def inspect_owned(folder: Path, marker: str, skip: tuple[str, ...] = ()) -> Ownership:
    """Compare `folder` with its marker; `skip`: top-level names that belong to the tool anyway."""
    records = _records(folder, marker)
    if records is None:
        return Ownership([], [])
    folders = {str(parent) for name in records for parent in Path(name).parents if str(parent) != "."}
    added: list[str] = []
    changed: list[str] = []

    def visit(directory: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda item: item.name):
            relative = prefix + entry.name
            if not prefix and entry.name in (marker, *skip):
                continue
            if relative in records:
                if not _unchanged(Path(entry.path), records[relative]):
                    changed.append(relative)
            elif relative in folders and entry.is_dir(follow_symlinks=False):
                visit(Path(entry.path), relative + "/")
            else:
                added.append(relative)

    try:
        visit(folder, "")
    except OSError as error:
        raise OutputError(
            f"Cannot read the earlier output {folder} ({error}); nothing was replaced."
        ) from error
    return Ownership(added, changed)


def occupied(folder: Path, relative: str) -> bool:
    """True when `folder/relative` cannot receive an entry: it, or a non-folder on its way, exists."""
    parts = Path(relative).parts
    for index in range(1, len(parts)):
        step = folder.joinpath(*parts[:index])
        if os.path.lexists(step) and (step.is_symlink() or not step.is_dir()):
            return True
    return os.path.lexists(folder / relative)


def carry_over(old: Path, new: Path, entries: list[str]) -> list[str]:
    """Move the user's `entries` from the old output into the new one; returns those left behind."""
    left = []
    for relative in entries:
        source = old / relative
        if not os.path.lexists(source):
            continue  # moved by an earlier, interrupted call
        if occupied(new, relative):
            left.append(relative)
            continue
        (new / relative).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, new / relative)
    return left
