"""balmm.bench."""
