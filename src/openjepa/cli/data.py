"""`openjepa data list` (the named datasets and what the cache holds) and `openjepa data get NAME...`."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa data`."""
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="the datasets known by name, and which are cached", description="list datasets")
    get = sub.add_parser("get", help="download and convert datasets ahead of time", description="fetch datasets")
    get.add_argument("names", nargs="+", metavar="NAME", help="dataset names, as in `openjepa data list`")


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "-"


def _list() -> int:
    import os

    from ..data.catalog import DATASETS, MIRROR_ENV, data_home
    from ..data.named import cache_state

    mirror = os.environ.get(MIRROR_ENV)
    print(f"cache: {data_home()} ($OPENJEPA_DATA)" + (f"; mirror: {mirror}" if mirror else ""))
    print(f"{'name':14s} {'status':38s} {'on disk':>10s}  {'download':>8s}  contents")
    for entry in DATASETS.values():
        state, size = cache_state(entry)
        print(f"{entry.name:14s} {state:38s} {_size(size):>10s}  {entry.download_size:>8s}  {entry.summary}")
    print("also: imagenet:FOLDER for an ImageNet tree (FOLDER/train/<wnid>/*.JPEG, FOLDER/val/<wnid>/*.JPEG)")
    return 0


def _get(names: list[str]) -> int:
    from ..data.catalog import lookup
    from ..data.named import prepare

    try:
        entries = [lookup(name) for name in names]  # every name checked before anything is fetched
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    for entry in entries:
        print(f"{entry.name}: {prepare(entry.name)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """List the named datasets, or fetch and convert the ones named."""
    return _list() if args.action == "list" else _get(args.names)
