"""regctl.commands."""
