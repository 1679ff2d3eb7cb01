"""Child process for the fault-injection tests: trains the tiny run until the parent SIGKILLs it.

python _child.py slow-after STEP PROGRESS_FILE FOLDER
    train; after every step write the step number to PROGRESS_FILE; from STEP on, dawdle
    0.25 s per step so the parent's SIGKILL lands at a random point of a later step.
python _child.py block-in-save STEP FLAG_FILE FOLDER
    train; when writing the checkpoint of STEP, write half its bytes, create FLAG_FILE and
    hang inside torch.save, so the parent kills us in the middle of a checkpoint write.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _tiny  # noqa: E402
import torch  # noqa: E402

import openjepa.train.loop as loop  # noqa: E402


def slow_after(step: int, progress: Path) -> None:
    original, done = loop.train_step, [0]

    def counting_step(*args, **kwargs):
        result = original(*args, **kwargs)
        done[0] += 1
        progress.write_text(str(done[0]))
        if done[0] >= step:
            time.sleep(0.25)
        return result

    loop.train_step = counting_step


def block_in_save(step: int, flag: Path) -> None:
    original = torch.save

    def hanging_save(obj, f, *args, **kwargs):
        if not (isinstance(obj, dict) and obj.get("format") == "openjepa" and obj.get("step") == step):
            return original(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        original(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        flag.write_text("inside atomic_save")
        time.sleep(300)  # the parent kills us here
        raise AssertionError("not killed")

    torch.save = hanging_save


if __name__ == "__main__":
    mode, step, signal_file, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    {"slow-after": slow_after, "block-in-save": block_in_save}[mode](step, signal_file)
    torch.set_num_threads(1)
    loop.fit(_tiny.tiny_cfg(folder), progress=False)
    print("finished without being killed")
