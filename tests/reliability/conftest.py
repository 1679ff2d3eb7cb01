"""Fixtures of the reliability tests: single-threaded torch, the uninterrupted baseline run, the CLI."""

from __future__ import annotations

import pytest

from ._tiny import one_thread, tiny_cfg


@pytest.fixture(autouse=True)
def _single_thread():
    """Bitwise comparisons need the same thread count in every run; one thread also avoids spinning
    OpenMP threads on a shared 2-core CI machine (10x slower there otherwise)."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def baseline(tmp_path_factory):
    """An uninterrupted run of the tiny configuration (12 steps, checkpoint every 2)."""
    from openjepa.train.loop import fit

    folder = tmp_path_factory.mktemp("baseline") / "run"
    with one_thread():
        result = fit(tiny_cfg(folder), progress=False)
    assert result.steps == 12 and result.stop_reason == "completed"
    return folder


@pytest.fixture
def cli_main():
    """`openjepa.cli.main.main`, or a skip while some subcommand module does not exist yet."""
    try:
        from openjepa.cli.main import build_parser, main

        build_parser()
    except ModuleNotFoundError as e:  # another engineer's subcommand not written yet
        pytest.skip(f"the openjepa CLI is not importable yet ({e}); the library API is tested instead")
    return main
