"""evaluation stage of hf-negmerge."""
