"""merging stage of hf-negmerge."""
