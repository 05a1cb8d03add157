"""`hf-negmerge` command line: a registry of subcommands, each in its own module.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and imports
nothing heavy at module level: torch, transformers and datasets load inside ``run``, so
`hf-negmerge --help` and `--version` answer at once and print no library warnings.
"""

from __future__ import annotations

import argparse
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
    try:
        return int(args._module.run(args) or 0)
    except (NegMergeError, FileExistsError, FileNotFoundError) as error:
        print(f"hf-negmerge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"hf-negmerge {args.command}: interrupted; finished work is kept and reused on rerun.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
