"""regctl.core."""
