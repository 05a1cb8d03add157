"""training stage of hf-negmerge."""
