"""regctl.render."""
