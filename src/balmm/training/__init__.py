"""balmm.training."""
