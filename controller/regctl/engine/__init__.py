"""regctl.engine."""
