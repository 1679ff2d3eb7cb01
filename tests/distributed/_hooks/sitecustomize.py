"""Test-only hooks for processes started by torchrun or an sbatch script (put this folder on PYTHONPATH).

When `openjepa.train.loop` is imported, its `train_step` is wrapped to
  * sleep OPENJEPA_TEST_STEP_DELAY seconds after every step (so a test can kill the run mid-way), and
  * send SIGUSR1 to this process after step OPENJEPA_TEST_SIGNAL_AT (as SLURM's --signal would).
Nothing is imported or changed in processes that never import the loop (e.g. the torchrun agent).
"""

import importlib.abc
import importlib.util
import os
import signal
import sys
import time

DELAY = float(os.environ.get("OPENJEPA_TEST_STEP_DELAY", "0") or 0)
SIGNAL_AT = int(os.environ.get("OPENJEPA_TEST_SIGNAL_AT", "0") or 0)


def _patch(loop):
    original, done = loop.train_step, [0]

    def train_step(*args, **kwargs):
        result = original(*args, **kwargs)
        done[0] += 1
        if DELAY:
            time.sleep(DELAY)
        if SIGNAL_AT and done[0] == SIGNAL_AT:
            os.kill(os.getpid(), signal.SIGUSR1)
        return result

    loop.train_step = train_step


class _PatchLoop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "openjepa.train.loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if DELAY or SIGNAL_AT:
    sys.meta_path.insert(0, _PatchLoop())
