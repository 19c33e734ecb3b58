"""Data layer: read, pair and validate, split, preprocess."""

from balmm.data.dataset import MultiOmicsData

__all__ = ["MultiOmicsData"]
