"""The command line's own behaviour: help, version, and staying light until a command runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hf_negmerge
from hf_negmerge.cli import COMMANDS, main

HEAVY_MODULES = ("torch", "transformers", "datasets", "sklearn", "peft", "accelerate")


def _run_cli_in_fresh_interpreter(*argv: str) -> subprocess.CompletedProcess:
    """Run the CLI in a new interpreter and print which heavy modules it imported."""
    code = (
        "import sys\n"
        "from hf_negmerge.cli import main\n"
        "try:\n"
        f"    code = main({list(argv)!r})\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        f"heavy = [name for name in {HEAVY_MODULES!r} if name in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        "sys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)])
def test_help_and_version_import_nothing_heavy(argv):
    result = _run_cli_in_fresh_interpreter(*argv)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout
    assert "torchvision" not in result.stderr  # no library warning the user did not cause


def test_bare_command_prints_help_and_starts_nothing(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-negmerge")
    for name in COMMANDS:
        assert name in out


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hf-negmerge {hf_negmerge.__version__}"
