"""Packaging for hf-negmerge (src layout)."""

import os
from pathlib import Path

from setuptools import Extension, find_packages, setup

ROOT = Path(__file__).parent

INSTALL_REQUIRES = [
    # Install the CPU build first where no GPU is wanted: `pip install torch==2.13.0`.
    "torch>=2.4",
    "transformers>=5.0",
    "peft>=0.18",
    "accelerate>=1.0",
    "datasets>=3.0",
    "huggingface_hub>=1.0",
    "safetensors>=0.8.0",  # safe_open(backend="pread"): validated headers, nothing mapped
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "numpy>=1.24",
    "pillow>=10.0",
    "pydantic>=2",  # recipe keys and types (recipe_schema.py)
    "pyyaml>=6.0",
    "tqdm>=4.66",
]

EXTRAS_REQUIRE = {
    "test": ["pytest>=8.0", "hypothesis>=6.100", "ruff>=0.6", "psutil>=5.9"],
}
# NegMerge's streaming fold in C (merging/kernel.py). Optional: where no compiler is found, the
# install goes on and the merge uses the generic torch fold (same results, ~2x slower).
NEGMERGE_KERNEL = Extension(
    "hf_negmerge.merging._negmerge_kernel",
    ["src/hf_negmerge/merging/_negmerge_kernel.c"],
    extra_compile_args=[] if os.name == "nt" else ["-O3", "-Wno-psabi"],
    optional=True,
)

EXTRAS_REQUIRE["dev"] = sorted({dep for deps in EXTRAS_REQUIRE.values() for dep in deps})

setup(
    name="hf-negmerge",
    version="0.1.0.dev0",
    description="Machine unlearning by sign-consensus weight merging (NegMerge) for Hugging Face models",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    ext_modules=[NEGMERGE_KERNEL],
    packages=find_packages("src"),
    include_package_data=True,
    package_data={
        "hf_negmerge": [
            "py.typed",
            "recipes/**/*.yaml",
            "hub/templates/*.md",
            "models/*.json",  # the ImageNet prompt templates and class names (data, not code)
            # the built-in default's θ₀ (~2 MB), built by scripts/build_default_original.py
            "packaged_originals/*/*.json",
            "packaged_originals/*/*.safetensors",
        ]
    },
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["hf-negmerge=hf_negmerge.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
