"""Ridge-regression probe for continuous targets (e.g. a Clevr object count read as a number).

The paper's Clevr/Count and Clevr/Dist are classification tasks (VISSL bins them) and should go
through `linear_probe`; this probe is the complementary "is the quantity linearly decodable" check.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._common import as_numpy
from .results import RegressionResult

# Log-spaced, wide enough for standardised features from small (D=192) to huge (D=4*1280) widths.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 15))


def regression_probe(
    train_f: Any,
    train_v: Any,
    test_f: Any,
    test_v: Any,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> RegressionResult:
    """RidgeCV (efficient leave-one-out over `alphas`) on standardised features.

    Its `rounded_acc` (also its `top1`) is the fraction of test points where round(prediction) ==
    round(target), i.e. the count accuracy.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.preprocessing import StandardScaler

    x_tr = as_numpy(train_f).astype(np.float64)
    x_te = as_numpy(test_f).astype(np.float64)
    y_tr = as_numpy(train_v).astype(np.float64).reshape(-1)
    y_te = as_numpy(test_v).astype(np.float64).reshape(-1)
    scaler = StandardScaler().fit(x_tr)
    model = RidgeCV(alphas=list(alphas)).fit(scaler.transform(x_tr), y_tr)
    pred = model.predict(scaler.transform(x_te))
    return RegressionResult(
        mae=float(mean_absolute_error(y_te, pred)),
        rmse=float(np.sqrt(np.mean((y_te - pred) ** 2))),
        r2=float(r2_score(y_te, pred)),
        rounded_acc=float(np.mean(np.rint(pred) == np.rint(y_te))),
        alpha=float(model.alpha_),
        n_train=int(x_tr.shape[0]),
        n_test=int(x_te.shape[0]),
    )
