"""Split names shared by the datasets: "train" and "test", with "val" accepted for "test"."""

from __future__ import annotations


def normalise_split(split: str, where: str) -> str:
    """Map a split name to "train" or "test" ("val" is accepted as an alias of "test")."""
    s = str(split).lower()
    if s == "val":
        return "test"
    if s not in ("train", "test"):
        raise ValueError(f"{where}: split must be 'train' or 'test' (or 'val'), got {split!r}")
    return s
