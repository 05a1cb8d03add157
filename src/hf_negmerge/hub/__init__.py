"""hub stage of hf-negmerge."""
