"""SLURM signals every process of a job step: DataLoader workers must survive SIGUSR1 / SIGTERM and
leave them to the training process (which checkpoints and stops)."""

from __future__ import annotations

import os
import signal

import pytest
from torch.utils.data import Dataset

from openjepa.data import make_loader

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")


class SignalsItself(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 2:
            os.kill(os.getpid(), signal.SIGUSR1)  # what `srun --signal=USR1@...` does to the worker
            os.kill(os.getpid(), signal.SIGTERM)  # and a pre-emption
        return i


def test_loader_workers_ignore_stop_signals():
    loader = make_loader(SignalsItself(), 2, shuffle=False, num_workers=1)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3], [4, 5], [6, 7]]
