"""models stage of hf-negmerge."""
