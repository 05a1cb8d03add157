"""data stage of hf-negmerge."""
