"""regctl.policy."""
