"""SalUn's MIA-Efficacy as an offline `evaluate` metric (loaded by path, never from the Hub)."""

import datasets
import evaluate
import numpy as np

from hf_negmerge.evaluation.mia import mia_efficacy

_SPLITS = ("retain", "test", "forget")

_DESCRIPTION = """
MIA-Efficacy (SalUn, Fan et al. 2024), in PERCENT. An RBF SVC (C=3, gamma="auto") is fitted on the
model's true-class probability: members = the first len(test) retain samples (label 1),
non-members = the test set (label 0). MIA-Efficacy = percent of forget samples predicted non-member.
"""

_KWARGS_DESCRIPTION = """
Args:
    confidences (`list` of `float`): softmax probability of the true class, one per sample.
    splits (`list` of `str`): which split each sample belongs to: "retain", "test" or "forget".
    seed (`int` or None, default None): None takes the first len(test) retain samples in input
        order (SalUn's code); an integer draws a random member subset instead.
Returns:
    mia_efficacy (`float`): percent of forget samples the attack predicts as non-members.
Examples:
    >>> metric = hf_negmerge.evaluation.load_metric("mia_efficacy")
    >>> metric.compute(confidences=[0.99, 0.98, 0.4, 0.5, 0.45], splits=["retain", "retain", "test", "test", "forget"])
"""

_CITATION = """
@inproceedings{fan2024salun,
  title={SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation},
  author={Fan, Chongyu and Liu, Jiancheng and Zhang, Yihua and Wong, Eric and Wei, Dennis and Liu, Sijia},
  booktitle={ICLR},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MiaEfficacy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"confidences": datasets.Value("float64"), "splits": datasets.Value("string")}
            ),
            format="numpy",
        )

    def _compute(self, confidences, splits, seed=None):
        confidences = np.asarray(confidences, dtype=np.float64)
        splits = np.asarray(splits)
        unknown = sorted(set(splits.tolist()) - set(_SPLITS))
        if unknown:
            raise ValueError(f"mia_efficacy: unknown split name(s) {unknown}; use {list(_SPLITS)}.")
        by_split = {name: confidences[splits == name] for name in _SPLITS}
        return {
            "mia_efficacy": mia_efficacy(by_split["retain"], by_split["test"], by_split["forget"], seed=seed)
        }
