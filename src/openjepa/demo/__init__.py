"""The offline demo: I-JEPA on generated images, against the same encoder at its random initialisation."""

from .run import run_demo

__all__ = ["run_demo"]
