"""balmm.profiling."""
