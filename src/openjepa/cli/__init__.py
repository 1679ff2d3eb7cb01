"""openjepa.cli."""
