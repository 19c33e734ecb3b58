"""balmm.model."""
