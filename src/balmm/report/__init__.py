"""balmm.report."""
