"""The output folder's life: claiming it, locking it, publishing into it atomically, checking it.

`hf_negmerge_outputs.json` (the manifest) records which top-level files the tool wrote (with
their sha256), so a rerun replaces only those and never a file the user put there, and whether
the last publication finished. Publishing marks the manifest incomplete first, moves the staged
files into place, then writes the complete manifest (every file and its sha256) last, so a kill
at any point leaves a folder that `push` refuses, never one that looks complete but mixes runs.
The folder's file names are named here; `outputs` builds the files themselves.

One job over ~370 lines: the manifest, the lock, publication and verification share the rules
above (which files are the tool's, what a complete folder is); split, each part would have to
restate them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .checkpoints import atomic_write_text, check_path_resolves
from .errors import ConfigError, NegMergeError
from .owned_files import sha256_of
from .results import METRICS_FILE
from .task_vector import MERGED_VECTOR_NAME

logger = logging.getLogger(__name__)

REPORT_FILE = "report.md"
LAMBDA_PLOT = "lambda_curves.png"
KEPT_PLOT = "kept_fraction.png"
LOSS_PLOT = "loss_curves.png"
TRAINING_LOG = "training_log.jsonl"
LAMBDA_LOG = "lambda_curves.jsonl"
MANIFEST_FILE = "hf_negmerge_outputs.json"
MANIFEST_FORMAT = "hf-negmerge/output-folder"
MANIFEST_VERSION = 1
WORK_DIR = "work"
LOCK_FILE = "unlearn.lock"
STAGING_PREFIX = ".final.tmp-"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Names a run always writes: checked before any work when the folder was not written by the tool.
KNOWN_OUTPUTS = (
    WORK_DIR,
    MANIFEST_FILE,
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "hf_negmerge_classifier.json",
    "negmerge_config.json",
    MERGED_VECTOR_NAME,
    METRICS_FILE,
    REPORT_FILE,
    "comparison.md",
    "comparison.json",
    "recipe.yaml",
    LAMBDA_PLOT,
    KEPT_PLOT,
    LOSS_PLOT,
    TRAINING_LOG,
    LAMBDA_LOG,
    "README.md",
)
_OUT_OF_SPACE = {errno.ENOSPC, errno.EDQUOT}
_HOW_TO_CHOOSE = "choose another output folder (--output-dir, or the recipe key output_dir)"


class OutputFolderError(NegMergeError, OSError):
    """The output folder cannot be used or is not complete; the message names the paths."""


@dataclass
class Manifest:
    """What the tool wrote into an output folder and whether the last publication completed.

    `files`: the completed publication (name -> sha256), empty while `complete` is False.
    `written`: every top-level file the tool may replace (name -> the sha256s it wrote there); a
    file whose content is not one of these was changed or put there by someone else.
    """

    complete: bool = False
    files: dict[str, str] = field(default_factory=dict)
    written: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The folder's manifest, None when it has none; a corrupt one is an error naming it."""
        path = folder / MANIFEST_FILE
        if not path.exists() and not path.is_symlink():
            return None
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(values, dict) or values.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"not a {MANIFEST_FORMAT} file")
            if values.get("format_version") != MANIFEST_VERSION:
                raise ValueError(f"format_version {values.get('format_version')!r} is not {MANIFEST_VERSION}")
            manifest = cls(
                complete=values["complete"] is True,
                files={str(k): str(v) for k, v in values["files"].items()},
                written={str(k): [str(h) for h in v] for k, v in values["written"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise OutputFolderError(
                f"{path} cannot be read ({error}); it is hf-negmerge's record of what it wrote in {folder}. "
                f"Restore it, or {_HOW_TO_CHOOSE}."
            ) from error
        return manifest

    def save(self, folder: Path) -> None:
        values = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "complete": self.complete,
            "files": dict(sorted(self.files.items())),
            "written": dict(sorted(self.written.items())),
        }
        atomic_write_text(folder / MANIFEST_FILE, json.dumps(values, indent=2) + "\n")

    def owns(self, path: Path) -> bool:
        """True when `path` is a regular file whose content the tool wrote there."""
        if path.is_symlink() or not path.is_file():
            return False
        return sha256_of(path) in self.written.get(path.name, [])


def check_output_dir(output_dir: str | Path) -> Path:
    """Refuse an empty output_dir (it would mean the current folder), one that is a file, and
    one whose '..' leaves a missing folder (creating it would leave a stray folder)."""
    if not str(output_dir).strip():
        raise ConfigError(
            "output_dir is empty, which would write into the current folder; set the recipe key "
            "output_dir (or --output-dir) to a folder of its own."
        )
    path = Path(output_dir)
    check_path_resolves(path)
    if path.is_symlink() and not path.exists():
        raise ConfigError(
            f"output_dir {path} is a symlink to {os.readlink(path)}, which does not exist; create that "
            f"folder or {_HOW_TO_CHOOSE}. The link is left as it is."
        )
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"output_dir {path} is a file, not a folder; {_HOW_TO_CHOOSE}. The file is left as it is."
        )
    return path


def _entries(folder: Path) -> list[str]:
    return sorted(item.name for item in folder.iterdir()) if folder.is_dir() else []


def _is_tool_folder(folder: Path) -> bool:
    """A manifest, or the lock file a run creates before anything else (a run killed at once)."""
    return (folder / MANIFEST_FILE).is_file() or (folder / WORK_DIR / LOCK_FILE).is_file()


def _clashes(output_dir: Path, names: Iterable[str], manifest: Manifest | None) -> list[str]:
    """The `names` present in `output_dir` that a run may not replace (not written by the tool)."""
    return [
        name
        for name in names
        if ((output_dir / name).exists() or (output_dir / name).is_symlink())
        and (manifest is None or not manifest.owns(output_dir / name))
    ]


def _clash_error(output_dir: Path, clashes: list[str], note: str) -> OutputFolderError:
    one = len(clashes) == 1
    return OutputFolderError(
        f"Output folder {output_dir} holds {', '.join(clashes)}, which hf-negmerge did not write there (or "
        f"which changed since) and a run would replace; {'it is' if one else 'they are'} never replaced{note}. "
        f"Move {'it' if one else 'them'} away and run again (finished grid runs are reused), or {_HOW_TO_CHOOSE}."
    )


def inspect_output_folder(output_dir: Path, overwrite: bool) -> Manifest | None:
    """Read-only: may a run write into `output_dir`? Raises naming the clashing paths.

    A folder the tool wrote is reused (its own files are replaced, no other). A non-empty folder
    it did not write is refused unless `overwrite`; even then the names a run writes must be free.
    """
    check_output_dir(output_dir)
    manifest = Manifest.load(output_dir) if output_dir.is_dir() else None
    if manifest is not None:
        names = sorted(set(KNOWN_OUTPUTS[2:]) | set(manifest.written))  # work/ and the manifest are its own
        clashes = _clashes(output_dir, names, manifest)
        if clashes:
            raise _clash_error(output_dir, clashes, "")
        return manifest
    if not _entries(output_dir) or _is_tool_folder(output_dir):
        return None
    if not overwrite:
        raise OutputFolderError(
            f"Output folder {output_dir} is not empty and was not written by `hf-negmerge unlearn` (it has no "
            f"{MANIFEST_FILE}). {_HOW_TO_CHOOSE[0].upper()}{_HOW_TO_CHOOSE[1:]}, or pass --overwrite "
            "(run_unlearning(..., overwrite=True)) to write next to its files; files hf-negmerge did not "
            "write are never replaced."
        )
    clashes = _clashes(output_dir, KNOWN_OUTPUTS, None)
    if clashes:
        raise _clash_error(output_dir, clashes, ", even with --overwrite")
    return None


@dataclass
class OutputClaim:
    """An output folder held by this process: the lock is released by `release` or at exit."""

    output_dir: Path
    lock_path: Path
    handle: IO[str]

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _lock(output_dir: Path) -> OutputClaim:
    lock_path = output_dir / WORK_DIR / LOCK_FILE
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise OutputFolderError(
            f"Output folder {output_dir} is in use by another `hf-negmerge unlearn` run (pid {holder}; lock "
            f"{lock_path}). Wait for it to finish, or {_HOW_TO_CHOOSE}."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return OutputClaim(output_dir, lock_path, handle)


def clean_stale_staging(output_dir: Path) -> list[Path]:
    """Remove staging folders a killed run left in work/ (only ever called under the lock)."""
    work = output_dir / WORK_DIR
    stale = [*work.glob(f"{STAGING_PREFIX}*"), work / "final"]
    removed = []
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(path)
    return removed


def claim_output_folder(output_dir: str | Path, overwrite: bool = False) -> OutputClaim:
    """Check `output_dir`, lock it for this run, record it as the tool's, clean stale staging.

    Nothing is created when the folder is refused. Use as a context manager (or call `release`).
    """
    output_dir = check_output_dir(output_dir)
    inspect_output_folder(output_dir, overwrite)
    claim = _lock(output_dir)
    try:
        manifest = inspect_output_folder(output_dir, overwrite)  # again, now that no one else can write
        if manifest is None:
            Manifest().save(output_dir)
        for path in clean_stale_staging(output_dir):
            logger.info("Removed %s, left by an interrupted run.", path)
    except BaseException:
        claim.release()
        raise
    return claim


def publish_outputs(output_dir: Path, build: Callable[[Path], None]) -> Manifest:
    """`build` fills a staging folder in work/; its files then replace the published ones at once.

    Call while holding the folder's claim. Clashes with files the tool did not write are refused
    before anything moves; running out of space leaves every published file as it was.
    """
    manifest = Manifest.load(output_dir) or Manifest()
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir / WORK_DIR))
    try:
        try:
            build(staging)
        except OSError as error:
            if error.errno in _OUT_OF_SPACE:
                raise OutputFolderError(
                    f"No space left on the device while writing the outputs of {output_dir} ({error.strerror}). "
                    f"The files already in {output_dir} are unchanged; free some space and run again "
                    "(finished grid runs are reused)."
                ) from error
            raise
        names = sorted(item.name for item in staging.iterdir())
        nested = [name for name in names if (staging / name).is_dir()]
        if nested:
            raise OutputFolderError(f"Internal error: outputs must be files, got folder(s) {nested}.")
        clashes = _clashes(output_dir, names, manifest)
        if clashes:
            raise _clash_error(output_dir, clashes, "")
        hashes = {name: sha256_of(staging / name) for name in names}
        written = {name: list(digests) for name, digests in manifest.written.items()}
        for name, digest in hashes.items():
            written[name] = [*written.get(name, []), digest]
        try:
            Manifest(complete=False, files={}, written=written).save(output_dir)  # invalidate first
        except OSError as error:
            if error.errno in _OUT_OF_SPACE:
                raise OutputFolderError(
                    f"No space left on the device while publishing into {output_dir} ({error.strerror}). "
                    f"The files already in {output_dir} are unchanged; free some space and run again."
                ) from error
            raise
        for name in names:
            os.replace(staging / name, output_dir / name)
        for name, digest in hashes.items():
            written[name] = [digest]
        complete = Manifest(complete=True, files=hashes, written=written)
        complete.save(output_dir)  # last: the folder is complete only from here on
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return complete


@contextlib.contextmanager
def naming_full_disk(output_dir: Path) -> Iterator[None]:
    """A full disk anywhere in a run becomes an error that names the output folder (and the
    file being written when the OS says which), not a bare "No space left on device"."""
    try:
        yield
    except OSError as error:
        if error.errno not in _OUT_OF_SPACE or isinstance(error, NegMergeError):
            raise
        file = f" {error.filename}" if error.filename is not None else ""
        raise OutputFolderError(
            f"No space left on the device while writing{file} for the output folder {output_dir} "
            f"({error.strerror or error}). The files already published in {output_dir} are unchanged and "
            "finished work is reused on rerun; free some space and run again."
        ) from error


def verify_output_folder(output_dir: str | Path) -> Manifest:
    """The manifest of a complete output folder; raises naming what is missing, changed or torn."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise OutputFolderError(f"Output folder {output_dir} does not exist.")
    manifest = Manifest.load(output_dir)
    if manifest is None:
        raise OutputFolderError(
            f"{output_dir} has no {MANIFEST_FILE}, the marker `hf-negmerge unlearn` writes last when all "
            "outputs are in place: it was not written by `hf-negmerge unlearn`. Run `hf-negmerge unlearn` "
            "into it, or call hf_negmerge.output_folder.seal_output_folder() on a folder assembled by hand."
        )
    if not manifest.complete:
        raise OutputFolderError(
            f"{output_dir} is incomplete: the run that wrote it stopped while publishing its outputs "
            f"({MANIFEST_FILE} is not marked complete), so its files may mix two runs. Run the same "
            "`hf-negmerge unlearn` again to finish it (finished grid runs are reused)."
        )
    missing = sorted(name for name in manifest.files if not (output_dir / name).is_file())
    changed = sorted(
        name
        for name, digest in manifest.files.items()
        if name not in missing and sha256_of(output_dir / name) != digest
    )
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if changed:
        problems.append(f"changed since they were written (sha256 differs): {', '.join(changed)}")
    if problems:
        raise OutputFolderError(
            f"{output_dir} does not match its {MANIFEST_FILE}: {'; '.join(problems)}. Rerun "
            "`hf-negmerge unlearn` into it to write them again."
        )
    if not any(name in manifest.files for name in WEIGHT_FILES):
        raise OutputFolderError(
            f"{output_dir} holds no model weights (none of {', '.join(WEIGHT_FILES)} is among its "
            "outputs); there is no model to push."
        )
    return manifest


def seal_output_folder(output_dir: str | Path) -> Manifest:
    """Record the top-level files of a folder assembled by hand as one complete publication,
    so `push` accepts it (`hf-negmerge unlearn` does this itself)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise OutputFolderError(f"Output folder {output_dir} does not exist.")
    names = sorted(
        item.name
        for item in output_dir.iterdir()
        if item.is_file() and not item.is_symlink() and item.name != MANIFEST_FILE
    )
    hashes = {name: sha256_of(output_dir / name) for name in names}
    manifest = Manifest(
        complete=True, files=hashes, written={name: [digest] for name, digest in hashes.items()}
    )
    manifest.save(output_dir)
    return manifest
