"""What a merge did: how much survived the consensus, per tensor and overall, and the norms."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class TensorStats:
    numel: int
    kept: int
    result_norm: float

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.numel if self.numel else 0.0


@dataclass
class MergeStats:
    """Per-tensor and overall statistics of one merge.

    `kept` counts non-zero entries of the merged vector: for NegMerge, the elements that passed
    the sign consensus. `input_norms[i]` is the global L2 norm of run i's task vector.
    """

    method: str
    num_models: int
    tensors: dict[str, TensorStats] = field(default_factory=dict)
    input_norms: list[float] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return sum(stats.numel for stats in self.tensors.values())

    @property
    def kept(self) -> int:
        return sum(stats.kept for stats in self.tensors.values())

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.numel if self.numel else 0.0

    @property
    def result_norm(self) -> float:
        return math.sqrt(sum(stats.result_norm**2 for stats in self.tensors.values()))

    def kept_fraction_by_tensor(self) -> dict[str, float]:
        return {name: stats.kept_fraction for name, stats in self.tensors.items()}

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "num_models": self.num_models,
            "numel": self.numel,
            "kept": self.kept,
            "kept_fraction": self.kept_fraction,
            "result_norm": self.result_norm,
            "input_norms": list(self.input_norms),
            "tensors": {
                name: {**asdict(stats), "kept_fraction": stats.kept_fraction}
                for name, stats in self.tensors.items()
            },
        }

    @classmethod
    def from_dict(cls, values: dict) -> MergeStats:
        tensors = {
            name: TensorStats(numel=entry["numel"], kept=entry["kept"], result_norm=entry["result_norm"])
            for name, entry in values.get("tensors", {}).items()
        }
        return cls(values["method"], values["num_models"], tensors, list(values.get("input_norms", [])))

    def summary(self) -> str:
        norms = ", ".join(f"{norm:.4g}" for norm in self.input_norms)
        return (
            f"{self.method}: {self.num_models} run(s), kept {self.kept:,} of {self.numel:,} elements "
            f"({100 * self.kept_fraction:.2f}%), merged norm {self.result_norm:.4g}, input norms [{norms}]"
        )
