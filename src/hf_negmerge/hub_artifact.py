"""`save_pretrained` / `from_pretrained` / `push_to_hub` for hf-negmerge's vectors, on `ModelHubMixin`.

`TaskVector` and `NegationVector` inherit huggingface_hub's `ModelHubMixin`: they implement its
two hooks (`_save_pretrained` writes the artifact's own files, `_from_pretrained` reads them back
from a local folder) and get the card metadata and `generate_model_card` from it. The three
public entry points are the mixin's names and arguments, kept safe for how these artifacts are
used:

- `save_pretrained` writes only the artifact's own files (and a `README.md` when there is none):
  the mixin's version deletes an existing `config.json` first, which next to a model (a pushed
  unlearned model carries its negation vector) is the model's own config.
- `from_pretrained` resolves a Hub id with `snapshot_download` restricted to the artifact's files
  (`hub.download.resolve_folder`): one clear `HubUnavailableError` naming the id when offline or
  unreachable, no retries for half a minute, and no foreign `config.json` read into the
  constructor (the mixin reads one from every repo).
- `push_to_hub` uploads through `hub._upload.upload_folder_to_repo`: bounded waits, retries on
  lost connections, the branch created when missing, the repo id checked first.

The Hub helpers are imported inside the methods: `hf_negmerge.hub` imports `NegationVector`,
which imports `TaskVector`, which inherits from this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

from huggingface_hub import ModelHubMixin

from .errors import CheckpointError

_T = TypeVar("_T", bound="HubArtifact")
CARD_NAME = "README.md"
ARTIFACT_CARD = """---
{{ card_data }}
---

# {{ artifact }}

{{ description }}

```python
{{ usage }}
```

Made with hf-negmerge.
"""


class HubArtifact(
    ModelHubMixin,
    library_name="hf-negmerge",
    tags=["hf-negmerge", "negmerge", "task-vector"],
    model_card_template=ARTIFACT_CARD,
):
    """Base of the vectors that live in a folder or a Hub repo (see the module docstring)."""

    #: file names the artifact consists of (what `from_pretrained` downloads); set by subclasses
    ARTIFACT_FILES: ClassVar[tuple[str, ...]] = ()

    def _save_pretrained(self, save_directory: Path) -> None:  # the mixin's hook
        raise NotImplementedError

    def _check_savable(self, save_directory: Path) -> None:
        """Refuse, before any folder is made, an artifact that its loader would refuse."""

    @classmethod
    def _load_folder(cls: type[_T], folder: Path, source: str) -> _T:
        """Read the artifact from a local folder; `source` is what the user named (for messages)."""
        raise NotImplementedError

    def _default_commit_message(self) -> str:
        return f"Upload {type(self).__name__}"

    def _card_values(self) -> dict[str, str]:
        """`artifact`, `description` and `usage` for the README template."""
        raise NotImplementedError

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write the artifact's files into `save_directory` (created when missing), atomically.

        Other files there are left alone; a `README.md` describing the artifact is added only when
        the folder has none. An artifact its loader would refuse (a non-finite tensor) raises
        before the folder is made. With `push_to_hub=True` the artifact is then pushed to `repo_id`
        (default: the folder's name) and the commit URL is returned.
        """
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"Cannot save into {directory}: it is a file, not a folder.")
        self._check_savable(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_pretrained(directory)
        if not (directory / CARD_NAME).exists():
            from .checkpoints import atomic_write_text

            atomic_write_text(directory / CARD_NAME, str(self.generate_model_card(**self._card_values())))
        if push_to_hub:
            return self.push_to_hub(repo_id or directory.name, **push_to_hub_kwargs)
        return None

    @classmethod
    def from_pretrained(
        cls: type[_T],
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
    ) -> _T:
        """Load from a local folder or a Hub repo id at `revision` (downloads only the artifact's files)."""
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=None,
            force_download=False,
            local_files_only=False,
            token=token,
        )

    @classmethod
    def _from_pretrained(
        cls: type[_T],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> _T:  # the mixin's hook
        from .hub.download import resolve_folder

        folder = resolve_folder(model_id, revision=revision, token=token, allow_patterns=cls.ARTIFACT_FILES)
        return cls._load_folder(folder, model_id)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
    ) -> str:
        """Upload the artifact (and its README) to `repo_id`, created when missing; the commit URL.

        `revision` names a branch, created from main when missing. Other files in the repo stay.
        """
        from .hub._upload import push_saved

        return push_saved(
            self.save_pretrained,
            repo_id,
            private=private,
            revision=revision,
            token=token,
            commit_message=commit_message or self._default_commit_message(),
        )
