"""Classification metrics from predictions: accuracy, per-class and weighted precision, recall
and F1, and the confusion matrix (rows: true class, columns: predicted)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["classification_report"]


def classification_report(
    targets: Sequence[int], predictions: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    k = len(names)
    if len(targets) != len(predictions):
        raise ValueError("targets and predictions must have the same length")
    confusion = [[0] * k for _ in range(k)]
    for t, p in zip(targets, predictions, strict=True):
        confusion[t][p] += 1
    per_class = {}
    for i, name in enumerate(names):
        tp = confusion[i][i]
        predicted = sum(confusion[r][i] for r in range(k))
        support = sum(confusion[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    total = len(targets)
    weighted = {
        m: (sum(c[m] * c["support"] for c in per_class.values()) / total if total else 0.0)
        for m in ("precision", "recall", "f1")
    }
    return {
        "accuracy": sum(confusion[i][i] for i in range(k)) / total if total else 0.0,
        "weighted": weighted,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(names), "matrix": confusion},
        "images": total,
    }
