"""Hub stage of hf-negmerge: model cards, the sparse negation vector, and pushing to the Hub."""

from .card import DatasetRef, UnlearningCardData, build_model_card, write_model_card
from .download import download_file, resolve_folder
from .negation_vector import NegationVector
from .push import prepare_upload_folder, push_config, push_unlearned_model

__all__ = [
    "DatasetRef",
    "NegationVector",
    "UnlearningCardData",
    "build_model_card",
    "download_file",
    "prepare_upload_folder",
    "push_config",
    "push_unlearned_model",
    "resolve_folder",
    "write_model_card",
]
