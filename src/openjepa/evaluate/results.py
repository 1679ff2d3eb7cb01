"""Typed results of the evaluation probes and of `evaluate_encoder`.

Every probe returns one of these; `to_dict()` gives the JSON that `openjepa eval --out` writes (and
the benchmarks record), so the key names and their order are part of the user-facing format.
Accuracies are fractions in 0..1; `top5` is None (and absent from the JSON) with 5 classes or fewer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Protocol

# The k of DINO's kNN protocol: the headline kNN number whenever it is among the evaluated k.
HEADLINE_K = 20


class ProbeResult(Protocol):
    """What every probe result offers: a headline top-1, split sizes and its JSON form."""

    @property
    def n_train(self) -> int:
        """Training examples the probe was fitted on."""
        ...

    @property
    def n_test(self) -> int:
        """Test examples it was scored on."""
        ...

    @property
    def top1(self) -> float:
        """The headline accuracy (0..1) of the probe."""
        ...

    @property
    def top5(self) -> float | None:
        """Top-5 accuracy, None where it does not apply."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The result as the JSON object the CLI writes."""
        ...


def _topk(top1: float, top5: float | None) -> dict[str, float]:
    return {"top1": top1} if top5 is None else {"top1": top1, "top5": top5}


@dataclass(frozen=True)
class ClassifierResult:
    """Test accuracy of a classifier probe (the attentive probe)."""

    top1: float
    top5: float | None
    n_train: int
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        """{"top1", ["top5"], "n_train", "n_test"}."""
        return {**_topk(self.top1, self.top5), "n_train": self.n_train, "n_test": self.n_test}


@dataclass(frozen=True)
class LogisticResult(ClassifierResult):
    """scikit-learn logistic regression: the accuracy and the inverse regularisation strength C."""

    C: float

    def to_dict(self) -> dict[str, Any]:
        """{"top1", ["top5"], "n_train", "n_test", "C"}."""
        return {**super().to_dict(), "C": self.C}


@dataclass(frozen=True)
class SweepPoint:
    """One (lr, wd) head of the linear probe's sweep and its validation top-1 / cross-entropy."""

    lr: float
    wd: float
    val_top1: float
    val_loss: float


@dataclass(frozen=True)
class LinearResult:
    """Linear probe: test accuracy of the selected (lr, wd), its validation top-1 and the whole sweep."""

    top1: float
    top5: float | None
    val_top1: float  # NaN when there was no validation split (a single configuration)
    best_lr: float
    best_wd: float
    n_train: int
    n_test: int
    refit: bool
    sweep: tuple[SweepPoint, ...]  # empty without a validation split

    def to_dict(self) -> dict[str, Any]:
        """{"top1", ["top5"], "val_top1", "best_lr", "best_wd", "n_train", "n_test", "refit", "sweep"}."""
        return {
            **_topk(self.top1, self.top5),
            "val_top1": self.val_top1,
            "best_lr": self.best_lr,
            "best_wd": self.best_wd,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "refit": self.refit,
            "sweep": [asdict(p) for p in self.sweep],
        }


@dataclass(frozen=True)
class KnnAccuracy:
    """Weighted-kNN accuracy at one k (the k as requested; it is clipped to the train size when run)."""

    k: int
    top1: float
    top5: float | None


@dataclass(frozen=True)
class KnnResult:
    """Weighted cosine kNN at several k; the headline is k = `headline_k`."""

    per_k: tuple[KnnAccuracy, ...]
    n_train: int
    n_test: int
    temperature: float
    headline_k: int

    def at(self, k: int) -> KnnAccuracy:
        """The accuracy at a requested k (KeyError if it was not evaluated)."""
        for acc in self.per_k:
            if acc.k == k:
                return acc
        raise KeyError(f"k={k} was not evaluated (evaluated: {[a.k for a in self.per_k]})")

    @property
    def top1(self) -> float:
        """Top-1 at the headline k."""
        return self.at(self.headline_k).top1

    @property
    def top5(self) -> float | None:
        """Top-5 at the headline k."""
        return self.at(self.headline_k).top5

    def to_dict(self) -> dict[str, Any]:
        """{"k10_top1", ["k10_top5"], ..., "n_train", "n_test", "temperature", "top1", ["top5"]}."""
        out: dict[str, Any] = {}
        for acc in self.per_k:
            out.update({f"k{acc.k}_{name}": v for name, v in _topk(acc.top1, acc.top5).items()})
        out.update(n_train=self.n_train, n_test=self.n_test, temperature=self.temperature)
        return {**out, **_topk(self.top1, self.top5)}


@dataclass(frozen=True)
class LowShotSetting:
    """Top-1 over seeds of one low-shot setting ("1%", "5-shot", ...)."""

    mean: float
    std: float  # sample std over seeds (ddof=1); 0 for one seed
    per_seed: tuple[float, ...]
    n_train: int  # subset size of the first seed

    def to_dict(self) -> dict[str, Any]:
        """{"mean", "std", "per_seed", "n_train"}."""
        return {"mean": self.mean, "std": self.std, "per_seed": list(self.per_seed), "n_train": self.n_train}


@dataclass(frozen=True)
class LowShotResult:
    """Low-shot logistic regression for each setting; the headline is the first setting (1% by default)."""

    settings: Mapping[str, LowShotSetting]  # in the order evaluated: fractions, then shots
    n_train: int  # the full train split the subsets are drawn from
    n_test: int

    @property
    def top1(self) -> float:
        """Mean top-1 of the first setting."""
        return next(iter(self.settings.values())).mean

    @property
    def top5(self) -> None:
        """Low-shot reports top-1 only, as the paper does."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """{"settings": {name: {...}}, "top1", "n_train", "n_test"}."""
        return {
            "settings": {name: s.to_dict() for name, s in self.settings.items()},
            "top1": self.top1,
            "n_train": self.n_train,
            "n_test": self.n_test,
        }


@dataclass(frozen=True)
class RegressionResult:
    """Ridge regression on a label read as a number; the headline is the rounded (count) accuracy."""

    mae: float
    rmse: float
    r2: float
    rounded_acc: float  # fraction of test points with round(prediction) == round(target)
    alpha: float
    n_train: int
    n_test: int

    @property
    def top1(self) -> float:
        """The count accuracy, `rounded_acc`."""
        return self.rounded_acc

    @property
    def top5(self) -> None:
        """Not a classifier: no top-5."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """{"mae", "rmse", "r2", "rounded_acc", "alpha", "n_train", "n_test", "top1"}."""
        return {
            "mae": self.mae,
            "rmse": self.rmse,
            "r2": self.r2,
            "rounded_acc": self.rounded_acc,
            "alpha": self.alpha,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "top1": self.top1,
        }


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: what was evaluated (task, data, pooling, encoder) and the probe's result."""

    task: str
    pooling: str
    data: str
    probe: ProbeResult
    seconds: float
    img_size: int | None = None  # encoders: the evaluation resolution
    pca_dim: int | None = None  # the raw-pixel baseline: PCA components and images it was fitted on
    pca_fit_on: int | None = None
    label_key: str | None = None
    checkpoint: str | None = None  # set by the caller that knows where the encoder came from
    encoder: str | None = None

    @property
    def top1(self) -> float:
        """The probe's headline accuracy."""
        return self.probe.top1

    @property
    def top5(self) -> float | None:
        """The probe's top-5, where it applies."""
        return self.probe.top5

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `openjepa eval --out`: the provenance, then the probe's keys, then the timing."""
        head = {
            "checkpoint": self.checkpoint,
            "encoder": self.encoder,
            "task": self.task,
            "pooling": self.pooling,
            "data": self.data,
            "img_size": self.img_size,
            "pca_dim": self.pca_dim,
            "pca_fit_on": self.pca_fit_on,
        }
        out: dict[str, Any] = {k: v for k, v in head.items() if v is not None}
        out.update(self.probe.to_dict())
        if self.label_key:
            out["label_key"] = self.label_key
        out["seconds"] = self.seconds
        return out
