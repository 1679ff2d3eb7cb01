"""Optional `torch.compile` for the training model, falling back to eager when it fails or is slower.

    net = compile_with_fallback(model, probe_steps=4)   # then train_step(net, ...) as usual

The wrapper keeps the eager module as `.module`, so `train_step`'s `unwrap(net)` (EMA, checkpoints)
still reaches the IJEPA; its state dict is the eager module's under a `module.` prefix (save
`unwrap(net)`'s parts, as the loop does). Wrap before DistributedDataParallel.
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any, Callable

import torch
import torch.nn as nn


class CompileFallbackWarning(UserWarning):
    """torch.compile was given up for eager execution (it failed, or it was not faster)."""


def _sync(args: tuple) -> None:
    for a in args:
        if isinstance(a, torch.Tensor) and a.device.type == "cuda":
            torch.cuda.synchronize(a.device)
            return


class CompiledWithFallback(nn.Module):
    """Runs `compile_fn(module)` and switches to `module` for good when that fails or loses.

    * Any exception raised by the compiled call (compilation happens lazily, on the first calls)
      is reported with a `CompileFallbackWarning` and the call is redone eagerly.
    * With `probe_steps > 0`, after `warmup_steps` compiled steps (compilation and the recompiles
      of the first mask sizes), the next `2 * probe_steps` steps alternate eager and compiled; the
      time from one step's first forward call to the next step's is compared (medians), and if
      compiled is not faster the wrapper falls back to eager. A step is `calls_per_step` forward
      calls (gradient accumulation). On CUDA the probe steps synchronise the device (a few steps).
    """

    _compiled: Callable[..., Any] | None  # set in __init__, None when compiling failed

    def __init__(
        self,
        module: nn.Module,
        *,
        compile_fn: Callable[[nn.Module], Callable] | None = None,
        probe_steps: int = 0,
        warmup_steps: int = 3,
        calls_per_step: int = 1,
        **compile_kwargs: Any,
    ) -> None:
        super().__init__()
        self.module = module
        fn = compile_fn or (lambda m: torch.compile(m, **compile_kwargs))
        self.mode = "compiled"
        self.reason: str | None = None
        try:
            compiled = fn(module)
        except Exception as e:  # noqa: BLE001 - any failure means: run eagerly
            compiled = None
            self._fall_back(f"torch.compile failed: {type(e).__name__}: {e}")
        object.__setattr__(self, "_compiled", compiled)  # not a submodule: no duplicate state-dict keys
        self.probe_steps, self.warmup_steps, self.calls_per_step = probe_steps, warmup_steps, calls_per_step
        self._calls = 0
        self._last: tuple[str, float] | None = None
        self.probe_times: dict[str, list[float]] = {"eager": [], "compiled": []}

    def _fall_back(self, reason: str) -> None:
        self.mode, self.reason = "eager", reason
        warnings.warn(f"{reason}; training continues eagerly", CompileFallbackWarning, stacklevel=3)

    def _probing_mode(self, step: int) -> str | None:
        """'eager'/'compiled' for a probe step, None outside the probe window."""
        if self.mode != "compiled" or self.probe_steps <= 0:
            return None
        k = step - self.warmup_steps
        if 0 <= k < 2 * self.probe_steps:
            return "eager" if k % 2 == 0 else "compiled"
        return None

    def _timing(self, step: int, first_call: bool, args: tuple) -> str | None:
        probe = self._probing_mode(step)
        if not first_call or (probe is None and self._last is None):
            return probe
        _sync(args)
        now = time.perf_counter()
        if self._last is not None:
            self.probe_times[self._last[0]].append(now - self._last[1])
        self._last = (probe, now) if probe is not None else None
        if probe is None and self.mode == "compiled":
            eager, comp = self.probe_times["eager"], self.probe_times["compiled"]
            if eager and comp and statistics.median(comp) >= statistics.median(eager):
                self._fall_back(
                    f"torch.compile was not faster (median step {statistics.median(comp):.4g} s "
                    f"compiled vs {statistics.median(eager):.4g} s eager)"
                )
        return probe

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        step, first_call = divmod(self._calls, self.calls_per_step)
        self._calls += 1
        probe = self._timing(step, first_call == 0, args)
        if self.mode == "compiled" and probe != "eager":
            assert self._compiled is not None  # a failed compile left mode "eager"
            try:
                return self._compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                self._fall_back(f"torch.compile failed: {type(e).__name__}: {e}")
        return self.module(*args, **kwargs)


def compile_with_fallback(model: nn.Module, *, enabled: bool = True, **kwargs: Any) -> nn.Module:
    """`CompiledWithFallback(model, **kwargs)` when enabled, else `model` itself."""
    return CompiledWithFallback(model, **kwargs) if enabled else model
