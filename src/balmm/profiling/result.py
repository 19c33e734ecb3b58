"""What ``balmm profile`` returns: :class:`ProfileResult`, whose ``to_dict()`` is profile.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from balmm.profiling.plan import KDEdge


@dataclass
class ProfileResult:
    """Everything ``balmm profile`` measured; ``to_dict()`` is profile.json."""

    dataset: dict
    settings: dict
    modalities: dict[str, dict]
    concatenated: dict
    pairs: list[dict]
    kd_plan: list[KDEdge]
    shapley: dict
    redundancy: dict
    verdict: dict
    warnings: list[str]
    timings_s: dict[str, float] = field(default_factory=dict)
    # one row per sample: which modalities it has, label, split (written as pairing.csv)
    pairing: pd.DataFrame | None = None

    def to_dict(self) -> dict:
        """The profile.json content (keys documented in docs/outputs.md)."""
        return {
            "balmm_profile_version": 1,
            "dataset": self.dataset,
            "settings": self.settings,
            "modalities": self.modalities,
            "concatenated": self.concatenated,
            "pairs": self.pairs,
            "kd_plan": [e.to_dict() for e in self.kd_plan],
            "shapley": self.shapley,
            "redundancy": self.redundancy,
            "verdict": self.verdict,
            "warnings": self.warnings,
            "timings_s": self.timings_s,
        }

    @property
    def strongest(self) -> str:
        """Modality with the highest probe macro-F1 (point estimate; the verdict's leader)."""
        return self.verdict["leader"]

    def write(self, out: str | Path) -> Path:
        """Write profile.json, profile.md, profile.html and plots/ atomically into ``out``."""
        from balmm.profiling.report import write_report

        return write_report(self, out)
