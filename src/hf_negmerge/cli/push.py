"""`hf-negmerge push`: upload an unlearning run's output folder to the Hugging Face Hub.

There is deliberately no --token flag (a token on the command line ends up in shell history and
process lists): authenticate with `HF_TOKEN` or `hf auth login`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "output_dir", type=Path, metavar="OUTPUT_DIR", help="Folder written by `hf-negmerge unlearn`."
    )
    parser.add_argument("--repo-id", required=True, help="Target Hub repo, 'user/name' (created if missing).")
    parser.add_argument("--private", action="store_true", help="Create the repo as private (new repos only).")
    parser.add_argument("--revision", default=None, help="Branch to push to (created from main if missing).")
    parser.add_argument("--commit-message", default=None, help="Commit message (default names the λ used).")
    parser.add_argument(
        "--no-vector", action="store_true", help="Do not upload the sparse negation vector next to the model."
    )
    parser.add_argument(
        "--base-model",
        default=None,
        help="Hub id of the original model, when metrics.json has none or a local path; checked "
        "against the model's config when that can be resolved.",
    )
    parser.add_argument(
        "--license",
        default=None,
        help="License id for the card (default: the one recorded at run time or the base model's).",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Assemble the upload (card, vector) and list it without pushing.",
    )


def run(args: argparse.Namespace) -> int:
    from ..hub.push import check_revision, prepare_upload_folder, push_unlearned_model

    check_revision(args.revision)  # the dry run too: a name the Hub would refuse is named at once
    include_vector = not args.no_vector
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="hf-negmerge-push-dry-run-") as staging:
            names = prepare_upload_folder(
                args.output_dir,
                staging,
                args.repo_id,
                include_vector,
                base_model=args.base_model,
                license=args.license,
            )
            sizes = {name: (Path(staging) / name).stat().st_size for name in names}
        print(f"Would upload {len(names)} files to {args.repo_id}:")
        for name in names:
            print(f"  {name}  ({sizes[name]:,} bytes)")
        return 0
    url = push_unlearned_model(
        args.output_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        include_vector=include_vector,
        base_model=args.base_model,
        license=args.license,
    )
    print(f"Pushed {args.output_dir} to {args.repo_id}: {url}")
    return 0
