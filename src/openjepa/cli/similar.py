"""`openjepa similar --index INDEX --query IMAGE_OR_FOLDER --k 8 [--out grid.png]`: nearest images by cosine."""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `openjepa similar`."""
    p.add_argument("--index", required=True, help="index written by `openjepa index`")
    p.add_argument(
        "--query",
        required=True,
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="query image(s), or folder(s) of query images",
    )
    p.add_argument("--k", type=int, default=8, help="neighbours per query (default 8)")
    p.add_argument("--out", metavar="GRID_PNG", help="draw a grid: each query (left) and its neighbours")
    p.add_argument("--max-rows", type=int, default=12, help="queries drawn in the grid (default 12)")
    p.add_argument(
        "--backend",
        choices=["torch", "faiss"],
        default="torch",
        help="torch: exact (default); faiss: needs faiss-cpu, exact with --faiss-index Flat",
    )
    p.add_argument("--faiss-index", default="Flat", help="FAISS factory string (default Flat = exact)")
    p.add_argument(
        "--checkpoint",
        help="the encoder's checkpoint, if it moved since the index was built (its fingerprint must match)",
    )
    p.add_argument(
        "--center",
        action="store_true",
        help="cosine of centred features (minus the index's mean feature): spreads scores that "
        "plain cosine crowds near 1",
    )
    p.add_argument(
        "--include-self", action="store_true", help="let a query that is in the index find itself (default: skip it)"
    )
    p.add_argument(
        "--label-from-folder",
        action="store_true",
        help="in the grid, colour neighbours green/red when their folder matches the query's",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=64, help="query images per forward pass")


def run(args: argparse.Namespace) -> int:
    """Embed the queries with the index's encoder, search, print and draw."""
    from ..core.distributed import resolve_device
    from ..data.images import read_rgb
    from ..search import Index

    t0 = time.perf_counter()
    index = Index.load(args.index)
    if len(index) == 0:
        raise ValueError(f"{args.index} holds no images")
    device = resolve_device(args.device)
    encoder = index.load_encoder(args.checkpoint, device=device)
    res = index.search_images(
        encoder,
        args.query,
        k=args.k,
        exclude_self=not args.include_self,
        backend=args.backend,
        batch_size=args.batch_size,
        device=device,
        center=args.center,
        faiss_index=args.faiss_index,
    )
    for path, why in res.skipped:
        print(f"skipped unreadable query: {path} ({why})")
    if not res.queries:
        raise ValueError("no readable query image")
    cwd = os.getcwd()

    def show(p: str) -> str:
        rel = os.path.relpath(p, cwd)
        return p if rel.startswith("..") else rel

    for q, (path, scores, paths) in enumerate(zip(res.queries, res.scores.tolist(), res.paths)):
        print(f"query {q + 1}/{len(res)}: {show(path)}")
        for rank, (s, p) in enumerate(zip(scores, paths), start=1):
            print(f"  {rank:3d}  {s:7.4f}  {show(p)}")
    if args.out:
        from ..viz import plot_retrieval_grid

        rows = min(len(res), max(1, args.max_rows))

        def thumb(p: str):
            try:
                return read_rgb(p, max_side=256)
            except Exception:  # noqa: BLE001 - a file gone since indexing is drawn blank
                import numpy as np

                return np.full((64, 64, 3), 0.85)

        qimgs = [thumb(p) for p in res.queries[:rows]]
        nimgs = [[thumb(p) for p in res.paths[i]] for i in range(rows)]
        scores = [[s for s in res.scores[i].tolist() if math.isfinite(s)] for i in range(rows)]
        labels: dict[str, Any] = {}
        if args.label_from_folder:
            labels = dict(
                query_labels=[os.path.basename(os.path.dirname(p)) for p in res.queries[:rows]],
                neighbour_labels=[[os.path.basename(os.path.dirname(p)) for p in res.paths[i]] for i in range(rows)],
            )
        out = plot_retrieval_grid(qimgs, nimgs, scores, args.out, **labels)
        print(f"grid of {rows} queries x {args.k} neighbours: {out}")
    kind = "centred cosine" if args.center else "cosine"
    print(
        f"{len(res)} queries against {len(index)} images ({kind}, {args.backend}) in {time.perf_counter() - t0:.1f} s"
    )
    return 0
