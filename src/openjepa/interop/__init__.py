"""openjepa.interop."""
