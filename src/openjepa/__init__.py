"""openjepa: I-JEPA self-supervised pretraining of Vision Transformers."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy top-level API, so `import openjepa` stays light: `openjepa.load_encoder`."""
    if name == "load_encoder":
        from .interop import load_encoder

        return load_encoder
    raise AttributeError(f"module 'openjepa' has no attribute {name!r}")
