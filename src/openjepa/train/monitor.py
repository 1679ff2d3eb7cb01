"""What a run reports: CSV logs (ours and the reference's), TensorBoard, and collapse indicators."""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger("openjepa.train")
METRIC_COLUMNS = [
    "step",
    "epoch",
    "loss",
    "lr",
    "wd",
    "momentum",
    "imgs_per_s",
    "data_wait_share",
    "target_std",
    "rankme",
    "knn_top1",
]
REFERENCE_COLUMNS = ["epoch", "itr", "loss", "mask-A", "mask-B", "time (ms)"]


@torch.no_grad()
def collapse_stats(tokens: torch.Tensor, max_rows: int = 4096) -> dict[str, float]:
    """Collapse indicators of (B, N, D) features: normalised std (1 healthy, 0 collapsed) and RankMe.

    `target_std` is the per-dimension std of L2-normalised tokens times sqrt(D); RankMe (Garrido et
    al. 2023) is exp(entropy) of the normalised singular values, an effective rank in [1, D].
    """
    x = tokens.reshape(-1, tokens.shape[-1]).float()
    if len(x) > max_rows:
        x = x[torch.linspace(0, len(x) - 1, max_rows).long()]
    z = F.normalize(x, dim=-1)
    std = z.std(dim=0).mean().item() * math.sqrt(x.shape[-1])
    s = torch.linalg.svdvals(x - x.mean(0))
    p = s / s.sum().clamp_min(1e-12) + 1e-12
    rankme = math.exp(-(p * p.log()).sum().item())
    return {"target_std": std, "rankme": rankme}


def collapse_warning(stats: dict[str, float], dim: int) -> str | None:
    """A message when the indicators fall toward collapse, else None."""
    if stats["target_std"] < 0.1:
        return (
            f"target features are collapsing (normalised std {stats['target_std']:.3f}, healthy ~1); "
            f"try a lower optimization.lr or a slower EMA (optimization.ema=[0.998,1.0])"
        )
    if stats["rankme"] < max(2.0, 0.01 * dim):
        return (
            f"target features have effective rank {stats['rankme']:.1f} of {dim} (RankMe); "
            f"the representation may be collapsing"
        )
    return None


def _keep_rows(path: Path, n: int, keep, header: list[str] | None = None) -> None:
    """Keep the header and the first `n` data rows accepted by `keep` (rewritten atomically).

    With `header`, the rows are rewritten under it, matched by column name (a run resumed by a
    version that logs more columns).
    """
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    body = [r for r in rows[1:] if r and keep(r)][:n]
    if header is not None and rows[0] != header:
        body = [[dict(zip(rows[0], r)).get(k, "") for k in header] for r in body]
        rows[0] = header
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *body])
    tmp.replace(path)


class DataWait:
    """How long the loop waits for its data: the time blocked in `next(loader)` over wall time.

    Per step (the `data_wait_share` column), over each log window (`end_window`: above
    `threshold` the loader is the bottleneck) and over the run. The first batch of each loader
    (worker start-up, the prefetch fill) counts in the step and the run, not in the warning.
    """

    def __init__(self, threshold: float = 0.2) -> None:
        """Start with nothing waited for."""
        self.threshold = threshold
        self.waited = self.filled = 0.0  # the step being assembled: waiting, of which pipeline fill
        self.window_wait = self.window_wall = self.window_images = 0.0
        self.run_wait = self.run_wall = self.run_images = 0.0
        self.warned = False

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """The loader's batches, each `next` timed."""
        it, first = iter(loader), True
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            waited = time.perf_counter() - t0
            self.waited += waited
            self.filled += waited if first else 0.0
            first = False
            yield batch

    def end_step(self, wall: float, images: int) -> float:
        """Close a step that took `wall` seconds (since the previous one) for `images` images: its wait share."""
        share = min(1.0, self.waited / wall) if wall > 0 else 0.0
        self.run_wait, self.run_wall, self.run_images = (
            self.run_wait + self.waited,
            self.run_wall + wall,
            self.run_images + images,
        )
        if not self.filled:
            self.window_wait, self.window_wall = self.window_wait + self.waited, self.window_wall + wall
            self.window_images += images
        self.waited = self.filled = 0.0
        return share

    def end_window(self, num_workers: int) -> tuple[float, str | None]:
        """Close a log window: its wait share, and the bottleneck warning (once a run) if over `threshold`."""
        share = self.window_wait / self.window_wall if self.window_wall > 0 else 0.0
        rate = self.window_images / self.window_wall if self.window_wall > 0 else 0.0
        self.window_wait = self.window_wall = self.window_images = 0.0
        if self.warned or share <= self.threshold:
            return share, None
        self.warned = True
        return share, (
            f"the data loader is the bottleneck: the loop waited for data {share:.0%} of the time "
            f"({rate:.0f} images/s); raise data.num_workers (now {num_workers}, {os.cpu_count()} CPU cores "
            f"here), keep data.fast_decode on, or convert a JPEG folder to raw pixels once "
            f"(python -m openjepa.data.raw_folder SRC DST)"
        )

    @property
    def share(self) -> float:
        """The run's wait share so far."""
        return self.run_wait / self.run_wall if self.run_wall > 0 else 0.0

    @property
    def imgs_per_s(self) -> float:
        """The run's images per second over the whole loop so far."""
        return self.run_images / self.run_wall if self.run_wall > 0 else 0.0


class RunLogger:
    """Buffers per-step values on the device and writes them every `log_freq` steps (one host sync)."""

    def __init__(
        self, folder: Path, write_tag: str, rank: int, is_main: bool, tensorboard: bool, resume_step: int | None
    ) -> None:
        self.folder, self.is_main = folder, is_main
        mode = "a" if resume_step is not None else "w"
        # The reference writes one CSV per rank with these exact columns.
        ref_path = folder / f"{write_tag}_r{rank}.csv"
        if resume_step is not None:
            # Rows written after the checkpoint we resume from are about to be recomputed.
            _keep_rows(ref_path, resume_step, lambda row: True)
            if is_main:
                _keep_rows(folder / "metrics.csv", resume_step, lambda row: int(row[0]) <= resume_step, METRIC_COLUMNS)
        self._ref_file = open(ref_path, mode, newline="")
        self._ref = csv.writer(self._ref_file)
        if mode == "w" or ref_path.stat().st_size == 0:
            self._ref.writerow(REFERENCE_COLUMNS)
        self._met_file = self._met = self._tb = None
        if is_main:
            met_path = folder / "metrics.csv"
            self._met_file = open(met_path, mode, newline="")
            self._met = csv.DictWriter(self._met_file, fieldnames=METRIC_COLUMNS)
            if mode == "w" or met_path.stat().st_size == 0:
                self._met.writeheader()
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(str(folder / "tensorboard"))
                except ImportError:  # tensorboard is a dependency, but keep training if it is broken
                    logger.warning("tensorboard is not importable; TensorBoard logging is off")
        self._buffer: list[tuple] = []
        self.extra: dict[int, dict[str, float]] = {}

    def record(
        self,
        step: int,
        epoch: int,
        itr: int,
        loss: torch.Tensor,
        lr: float,
        wd: float,
        momentum: float,
        mask_a: int,
        mask_b: int,
        ms: float,
        imgs_per_s: float,
        data_wait_share: float = 0.0,
    ) -> None:
        """Keep one step's values; the loss stays a device tensor until `flush`."""
        self._buffer.append((step, epoch, itr, loss, lr, wd, momentum, mask_a, mask_b, ms, imgs_per_s, data_wait_share))

    def add_metrics(self, step: int, **values: float) -> None:
        """Attach extra scalars (collapse indicators, kNN accuracy) to a step's row."""
        self.extra.setdefault(step, {}).update(values)
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"monitor/{k}", v, step)

    def flush(self) -> list[float]:
        """Write buffered rows; returns their losses (this is where the host waits for the device)."""
        if not self._buffer:
            # Metrics measured after their step was written (e.g. an end-of-epoch kNN) get a row of their own.
            for step in sorted(self.extra):
                if self._met is not None:
                    self._met.writerow({"step": step, **{k: f"{v:.6g}" for k, v in self.extra[step].items()}})
            self.extra.clear()
            return []
        losses = torch.stack([row[3] for row in self._buffer]).float().tolist()
        for row, loss in zip(self._buffer, losses):
            step, epoch, itr, _, lr, wd, m, mask_a, mask_b, ms, ips, wait = row
            self._ref.writerow([epoch + 1, itr, f"{loss:.5f}", mask_a, mask_b, f"{ms:.1f}"])
            if self._met is not None:
                extra = self.extra.pop(step, {})
                self._met.writerow(
                    {
                        "step": step,
                        "epoch": epoch + 1,
                        "loss": f"{loss:.6g}",
                        "lr": f"{lr:.6g}",
                        "wd": f"{wd:.6g}",
                        "momentum": f"{m:.8g}",
                        "imgs_per_s": f"{ips:.1f}",
                        "data_wait_share": f"{wait:.4f}",
                        **{k: f"{v:.6g}" for k, v in extra.items()},
                    }
                )
            if self._tb is not None:
                scalars = (("loss", loss), ("lr", lr), ("wd", wd), ("momentum", m), ("imgs_per_s", ips))
                for k, v in (*scalars, ("data_wait_share", wait)):
                    self._tb.add_scalar(f"train/{k}", v, step)
        self._buffer.clear()
        self._ref_file.flush()
        if self._met_file is not None:
            self._met_file.flush()
        return losses

    def close(self) -> None:
        """Flush and close every file."""
        self.flush()
        self._ref_file.close()
        if self._met_file is not None:
            self._met_file.close()
        if self._tb is not None:
            self._tb.close()
