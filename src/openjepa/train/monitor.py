"""What a run reports: CSV logs (ours and the reference's), TensorBoard, and collapse indicators."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger("openjepa.train")
METRIC_COLUMNS = ["step", "epoch", "loss", "lr", "wd", "momentum", "imgs_per_s", "target_std", "rankme",
                  "knn_top1"]
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
        return (f"target features are collapsing (normalised std {stats['target_std']:.3f}, healthy ~1); "
                f"try a lower optimization.lr or a slower EMA (optimization.ema=[0.998,1.0])")
    if stats["rankme"] < max(2.0, 0.01 * dim):
        return (f"target features have effective rank {stats['rankme']:.1f} of {dim} (RankMe); "
                f"the representation may be collapsing")
    return None


def _keep_rows(path: Path, n: int, keep) -> None:
    """Keep the header and the first `n` data rows accepted by `keep` (rewritten atomically)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    body = [r for r in rows[1:] if r and keep(r)][:n]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *body])
    tmp.replace(path)


class RunLogger:
    """Buffers per-step values on the device and writes them every `log_freq` steps (one host sync)."""

    def __init__(self, folder: Path, write_tag: str, rank: int, is_main: bool, tensorboard: bool,
                 resume_step: int | None) -> None:
        self.folder, self.is_main = folder, is_main
        mode = "a" if resume_step is not None else "w"
        # The reference writes one CSV per rank with these exact columns.
        ref_path = folder / f"{write_tag}_r{rank}.csv"
        if resume_step is not None:
            # Rows written after the checkpoint we resume from are about to be recomputed.
            _keep_rows(ref_path, resume_step, lambda row: True)
            if is_main:
                _keep_rows(folder / "metrics.csv", resume_step, lambda row: int(row[0]) <= resume_step)
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

    def record(self, step: int, epoch: int, itr: int, loss: torch.Tensor, lr: float, wd: float,
               momentum: float, mask_a: int, mask_b: int, ms: float, imgs_per_s: float) -> None:
        """Keep one step's values; the loss stays a device tensor until `flush`."""
        self._buffer.append((step, epoch, itr, loss, lr, wd, momentum, mask_a, mask_b, ms, imgs_per_s))

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
            step, epoch, itr, _, lr, wd, m, mask_a, mask_b, ms, ips = row
            self._ref.writerow([epoch + 1, itr, f"{loss:.5f}", mask_a, mask_b, f"{ms:.1f}"])
            if self._met is not None:
                extra = self.extra.pop(step, {})
                self._met.writerow({"step": step, "epoch": epoch + 1, "loss": f"{loss:.6g}", "lr": f"{lr:.6g}",
                                    "wd": f"{wd:.6g}", "momentum": f"{m:.8g}", "imgs_per_s": f"{ips:.1f}",
                                    **{k: f"{v:.6g}" for k, v in extra.items()}})
            if self._tb is not None:
                for k, v in (("loss", loss), ("lr", lr), ("wd", wd), ("momentum", m), ("imgs_per_s", ips)):
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
