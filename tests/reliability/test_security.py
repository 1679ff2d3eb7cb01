"""Security: no loader we have unpickles code, and paths from configs are never run by a shell.

The payload is the classic one: a pickle whose __reduce__ calls exec, here to create a marker
file. A positive control shows that plain pickle would run it; every openjepa loader must refuse it.
"""

from __future__ import annotations

import ast
import importlib
import json
import pickle
from pathlib import Path

import pytest
import torch

import openjepa
from openjepa.core.checkpoint import CheckpointError, find_resumable, load_checkpoint, safe_load, sha256_file
from openjepa.train.loop import fit

from ._tiny import tiny_cfg

SRC = Path(openjepa.__file__).resolve().parent


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _payload(marker: Path) -> dict:
    tensor = torch.zeros(3)
    return {
        "format": "openjepa",
        "format_version": 1,
        "step": 2,
        "encoder": {"w": tensor},
        "target_encoder": {"w": tensor},
        "note": _Exploit(marker),
    }


def _write(kind: str, path: Path, marker: Path) -> None:
    if kind == "torch-zip":
        torch.save(_payload(marker), path)
    elif kind == "torch-legacy":
        torch.save(_payload(marker), path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle renamed to .pt
        path.write_bytes(pickle.dumps(_payload(marker), protocol=2))
    # a matching checksum sidecar: the checksum passes, so only the refusal to unpickle protects us
    path.with_suffix(".json").write_text(
        json.dumps({"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "step": 2})
    )


def test_positive_control__plain_pickle_would_run_the_payload(tmp_path):
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists(), "the exploit payload does not work, so the refusal tests would prove nothing"


def _interop(name: str):
    interop = importlib.import_module("openjepa.interop")
    fn = getattr(interop, name, None)
    if fn is None:
        pytest.skip(f"openjepa.interop.{name} does not exist yet")
    return fn


LOADERS = {
    "safe_load": lambda p: safe_load(p),
    "load_checkpoint": lambda p: load_checkpoint(p),
    "find_resumable": lambda p: find_resumable(p.parent),
    "fit(resume=True)": lambda p: fit(tiny_cfg(p.parent), resume=True, progress=False),
    "interop.load_encoder": lambda p: _interop("load_encoder")(p),
    "interop.read_weights": lambda p: _interop("read_weights")(p),
    "interop.load_reference_checkpoint": lambda p: _interop("load_reference_checkpoint")(p),
    "interop.load_timm": lambda p: _interop("load_timm")(p),
}


@pytest.mark.parametrize("kind", ["torch-zip", "torch-legacy", "bare-pickle"])
@pytest.mark.parametrize("loader", list(LOADERS))
def test_crafted_pickle__is_refused_by_every_loader_and_never_runs(tmp_path, kind, loader):
    marker = tmp_path / "pwned"
    path = tmp_path / "run" / "ckpt-step00000002.pt"
    path.parent.mkdir()
    _write(kind, path, marker)
    with pytest.raises(Exception) as e:
        LOADERS[loader](path)
    assert not marker.exists(), f"{loader} executed code from {kind} file"
    assert isinstance(e.value, CheckpointError), f"{loader}: {type(e.value).__name__}: {e.value}"
    if kind != "bare-pickle":  # a bare pickle may also be refused as 'not a torch file'
        assert "arbitrary unpickling" in str(e.value), str(e.value)


SHELL_TRICKS = ["$(touch pwned)", "`touch pwned`", "x; touch pwned", "$HOME"]


@pytest.mark.parametrize("trick", SHELL_TRICKS)
def test_dataset_paths__are_taken_literally_never_shell_expanded(tmp_path, monkeypatch, trick):
    monkeypatch.chdir(tmp_path)  # where a shell would create ./pwned
    for spec, expected in ((f"folder:{trick}", FileNotFoundError), (trick, ValueError)):
        with pytest.raises(expected) as e:
            fit(tiny_cfg(tmp_path / "run", f"data.dataset={spec}"), progress=False)
        assert trick in str(e.value), str(e.value)  # the literal text, unexpanded
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        fit(tiny_cfg(tmp_path / "run", "data.dataset=null", f"data.root_path={trick}"), progress=False)
    assert not (tmp_path / "pwned").exists()


def test_output_folder__is_created_literally_never_shell_expanded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run-$(touch pwned)-`touch pwned`"
    fit(tiny_cfg(folder, "optimization.max_steps=1"), progress=False)
    assert (folder / "ckpt-step00000001.pt").exists()
    assert not (tmp_path / "pwned").exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f"{f.value.id}.{f.attr}"
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                else f".{f.attr}"
                if isinstance(f, ast.Attribute)
                else getattr(f, "id", "")
            )
            yield node, name, {k.arg: k.value for k in node.keywords}


def test_source_never_unpickles_code_or_calls_a_shell():
    """A guard against regressions anywhere in src/openjepa (not only the files tested above)."""
    import yaml

    banned = {
        "pickle.load",
        "pickle.loads",
        "pickle.Unpickler",
        "marshal.loads",
        "dill.load",
        "dill.loads",
        "os.system",
        "os.popen",
        "eval",
        "exec",
        ".expandvars",
        "shelve.open",
    }  # eval/exec: builtins only
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = lambda n: f"{path.relative_to(SRC)}:{n.lineno}"  # noqa: E731, B023
        for node, name, kw in _calls(tree):
            const = lambda k: getattr(kw.get(k), "value", None)  # noqa: E731, B023
            if name in banned:
                problems.append(f"{where(node)}: {name}(...)")
            elif name == "torch.load" and const("weights_only") is not True:
                problems.append(f"{where(node)}: torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and const("allow_pickle") is True:
                problems.append(f"{where(node)}: np.load(allow_pickle=True)")
            elif "shell" in kw and const("shell") is not False:
                problems.append(f"{where(node)}: {name}(shell=...)")
            elif name == "yaml.load":
                loader = kw.get("Loader")
                module = ".".join(("openjepa", *path.relative_to(SRC).with_suffix("").parts))
                cls = (
                    getattr(importlib.import_module(module), loader.id, None) if isinstance(loader, ast.Name) else None
                )
                if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                    problems.append(f"{where(node)}: yaml.load without a SafeLoader")
    assert not problems, "unsafe loading or shell use:\n" + "\n".join(problems)
