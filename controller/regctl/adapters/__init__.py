"""regctl.adapters."""
