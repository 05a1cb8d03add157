"""`hf-negmerge` command line: a registry of subcommands, each in its own module.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and imports
nothing heavy at module level: torch, transformers and datasets load inside ``run``, so
`hf-negmerge --help` and `--version` answer at once and print no library warnings.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from ..errors import NegMergeError

# name -> (module, one-line help). Add a command by adding a module and a row here.
COMMANDS: dict[str, tuple[str, str]] = {
    "unlearn": ("hf_negmerge.cli.unlearn", "Run an unlearning recipe end to end (default: built-in digits)."),
    "merge": (
        "hf_negmerge.cli.merge",
        "Merge fine-tuned checkpoints into a task vector (and optionally unlearn).",
    ),
    "push": ("hf_negmerge.cli.push", "Upload an unlearned model folder (with card and vector) to the Hub."),
}


# What an interrupted command leaves behind, said after Ctrl-C (each command keeps different things).
INTERRUPTED: dict[str, str] = {
    "unlearn": "finished work is kept and reused on rerun.",
    "merge": "nothing was written (the output folder appears only when complete).",
    "push": "the local folder is unchanged and a Hub commit is all or nothing; run the same command "
    "again to push.",
}
# OS errors caused by the user's environment (full disk, read-only or forbidden folders), shown
# as messages even when they carry no path.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def describe_os_error(error: OSError) -> str:
    """`[Errno 2] No such file or directory: 'x'` without the errno number, paths named."""
    if error.strerror is None:
        return str(error)
    paths = [str(path) for path in (error.filename, error.filename2) if path is not None]
    return f"{error.strerror}: {' -> '.join(repr(path) for path in paths)}" if paths else error.strerror


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="hf-negmerge",
        description="Machine unlearning by sign-consensus weight merging (NegMerge).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after options (argparse stops collecting positionals there)
    if hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:  # bare `hf-negmerge`: show what there is, start nothing
        parser.print_help()
        return 0
    from ..console import warnings_as_messages

    try:
        with warnings_as_messages():
            return int(args._module.run(args) or 0)
    except NegMergeError as error:
        print(f"hf-negmerge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        about_a_path = isinstance(error, FileExistsError | FileNotFoundError) or error.filename is not None
        if not about_a_path and error.errno not in _ENVIRONMENT_ERRNOS:
            raise  # not about a file or the machine: a bug, shown with its traceback
        print(f"hf-negmerge {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = INTERRUPTED.get(args.command, "")
        print(f"hf-negmerge {args.command}: interrupted{'; ' + note if note else '.'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
