"""openjepa.evaluate."""
