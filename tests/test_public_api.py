"""The public API: every exported name resolves to what its module defines, no submodule shadows
a public name, and importing the package stays cheap."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import hf_negmerge


def test_every_public_name_is_the_object_its_module_defines():
    assert set(hf_negmerge.__all__) - {"__version__"} == set(hf_negmerge._EXPORTS)
    for name, module in hf_negmerge._EXPORTS.items():
        assert getattr(hf_negmerge, name) is getattr(importlib.import_module(module), name), name


def test_no_submodule_shadows_a_public_name():
    """`import hf_negmerge.X` sets the package attribute X to the module, replacing a lazy export X."""
    submodules = {info.name for info in pkgutil.iter_modules(hf_negmerge.__path__)}
    assert not submodules & set(hf_negmerge.__all__)
    code = (
        "import importlib, pkgutil, hf_negmerge\n"
        "for info in pkgutil.iter_modules(hf_negmerge.__path__):\n"
        "    importlib.import_module('hf_negmerge.' + info.name)\n"
        "from hf_negmerge import unlearn, merge\n"
        "print(callable(unlearn) and not hasattr(unlearn, '__path__'), type(merge).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "function"]


def test_import_does_not_load_torch():
    code = "import sys, hf_negmerge; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
