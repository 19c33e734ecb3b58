"""Published reference numbers, shown beside a bench table with their protocol."""

from __future__ import annotations

from typing import Any

REFERENCES: dict[str, dict[str, Any]] = {
    "mogonet-rosmap": {
        "title": "ROSMAP (MOGONET split: 245 train / 106 test), published numbers",
        "protocol": (
            "As published. The original papers selected models on the test set (no separate "
            "validation split), so these numbers are optimistic and not directly comparable "
            "with balmm's validation-selected results. 'F1' is the papers' F1 (binary, "
            "positive class = AD), not macro-F1."
        ),
        "metrics": ["accuracy", "f1", "auroc"],
        "rows": [
            {
                "method": "MOGONET (Wang et al. 2021)",
                "accuracy": 0.815,
                "f1": 0.821,
                "auroc": 0.874,
                "selection": "test set",
            },
            {
                "method": "MMDynamics (Han et al. 2022)",
                "accuracy": 0.842,
                "f1": 0.846,
                "auroc": 0.912,
                "selection": "test set",
            },
            {
                "method": "best published",
                "accuracy": 0.882,
                "f1": 0.876,
                "auroc": 0.924,
                "selection": "test set",
            },
        ],  # fmt: skip
    },
}
