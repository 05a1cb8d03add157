"""The public API: every exported name resolves, and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import hf_negmerge


def test_every_public_name_resolves():
    for name in hf_negmerge.__all__:
        assert getattr(hf_negmerge, name) is not None, name
    assert set(hf_negmerge.__all__) - {"__version__"} == set(hf_negmerge._EXPORTS)


def test_import_does_not_load_torch():
    code = "import sys, hf_negmerge; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
