"""Evaluation tests run single-threaded: the tensors are tiny, and on a shared 2-core machine
intra-op threads that spin-wait on a busy core can make a 1 s test take a minute."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
