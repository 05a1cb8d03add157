"""hf-negmerge: machine unlearning by sign-consensus weight merging (NegMerge, ICML 2025)."""

__version__ = "0.1.0.dev0"
