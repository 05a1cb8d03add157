"""Top-1 accuracy in percent, as an offline `evaluate` metric (loaded by path, never from the Hub)."""

import datasets
import evaluate

from hf_negmerge.evaluation.predict import accuracy

_DESCRIPTION = """
Top-1 accuracy in PERCENT (0-100): 100 * (number of predictions equal to the reference) / N.
Percent, unlike the Hub's `accuracy` (a fraction), because NegMerge and SalUn report percentages
and the retrain gap is computed in percentage points.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
Returns:
    accuracy (`float`): percent of predictions equal to their reference, in [0, 100].
Examples:
    >>> metric = hf_negmerge.evaluation.load_metric("accuracy")
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 75.0}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(predictions, references)}
