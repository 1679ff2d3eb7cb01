"""The SLURM launcher: the sbatch script it writes, `--slurm` on the CLI, and requeue on a signal.

No SLURM here: the script runs under bash with stand-ins for `srun` (starts the tasks with the
variables srun gives them) and `scontrol` (answers `show hostnames`, records `requeue`).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from openjepa.config import load_config
from openjepa.core.checkpoint import list_checkpoints, load_checkpoint
from openjepa.core.distributed import process_layout
from openjepa.launch.slurm import SlurmOptions, render_sbatch, submit, write_job
from openjepa.train.loop import fit

from ..reliability._tiny import losses, params, same_params, tiny_cfg
from ._launch import child_env, free_port_in, start, wait

STEPS = 12  # 24 images, batch 4: 6 steps per epoch, 2 epochs

FAKE_SRUN = """#!/bin/bash
# srun stand-in: start SLURM_NTASKS tasks with the variables a job step gives them, wait, return the max status
while [[ "$1" == -* ]]; do shift; done
n=${SLURM_NTASKS:-1}; pids=()
for ((i = 0; i < n; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NUM_TASKS=$n SLURM_STEP_ID=0 "$@" &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p"; s=$?; (( s > rc )) && rc=$s; done
exit $rc
"""
FAKE_SCONTROL = """#!/bin/bash
# scontrol stand-in
if [[ "$1 $2" == "show hostnames" ]]; then echo 127.0.0.1; exit 0; fi
echo "$@" >> "$SCONTROL_LOG"
"""


def _tools(folder: Path) -> Path:
    folder.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_render_sbatch__header_rendezvous_resume_and_requeue(tmp_path):
    opts = SlurmOptions(
        nodes=2,
        gpus_per_node=8,
        partition="gpu",
        account="proj",
        time="24:00:00",
        setup=["module load cuda"],
        extra=["--exclusive"],
        python="/opt/venv/bin/python",
    )
    text = render_sbatch(opts, tmp_path / "cfg.yaml", tmp_path / "run")
    header = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH ")]
    for option in (
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--time=24:00:00",
        "--requeue",
        "--signal=USR1@300",
        "--partition=gpu",
        "--account=proj",
        "--exclusive",
        "--open-mode=append",
        f"--output={tmp_path / 'run' / 'slurm' / '%x-%j.out'}",
    ):
        assert option in header, option
    srun = [line for line in text.splitlines() if line.startswith("srun ")]
    assert srun == [
        f"srun /opt/venv/bin/python -m openjepa.cli.main pretrain --config {tmp_path / 'cfg.yaml'} "
        f"--resume --no-progress"
    ]
    assert 'if [ "$rc" -eq 75 ]; then' in text and 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert text.index("module load cuda") < text.index("srun ")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0, "shell syntax"
    with pytest.raises(ValueError, match=">= 1"):
        SlurmOptions(nodes=0)


def test_process_layout__torchrun_first_then_srun_steps_never_plain_slurm_ntasks():
    assert process_layout({}) == (0, 1, 0)
    assert process_layout({"RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3"}) == (3, 16, 3)
    srun = {"SLURM_PROCID": "9", "SLURM_STEP_NUM_TASKS": "16", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16"}
    assert process_layout(srun) == (9, 16, 1)
    # torchrun inside an srun step (one task per node): torchrun's variables win
    assert process_layout({**srun, "RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "5"}) == (5, 16, 5)
    # the batch script or an salloc shell: SLURM_NTASKS is set but this is one process
    assert process_layout({"SLURM_NTASKS": "16", "SLURM_PROCID": "0"}) == (0, 1, 0)


def test_cli_slurm__writes_the_script_and_config_and_submits_with_sbatch(tmp_path, monkeypatch, capsys):
    from openjepa.cli.main import main

    run = tmp_path / "run"
    argv = [
        "pretrain",
        "--slurm",
        "--nodes",
        "2",
        "--gpus-per-node",
        "8",
        "--partition",
        "gpu",
        "--config",
        "in1k_vith14_ep300",
        "--out",
        str(run),
        "--set",
        "data.root_path=/data",
    ]
    assert main(argv + ["--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"script": str(run / "slurm" / "pretrain.sbatch"), "processes": 16, "global_batch": 2048}
    cfg = load_config(run / "slurm" / "config.yaml")
    assert cfg.data.root_path == "/data" and cfg.logging.folder == str(run) and cfg.meta.model_name == "vit_huge"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert main(argv) == 2
    assert "not a SLURM login node" in capsys.readouterr().err
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" > {bin_dir / "args"}; echo "4242;cluster"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert submit(run / "slurm" / "pretrain.sbatch") == "4242"
    assert (bin_dir / "args").read_text().split() == ["--parsable", str(run / "slurm" / "pretrain.sbatch")]


@pytest.mark.distributed
def test_sbatch_script__signal_checkpoints_exits_75_requeues_and_the_requeued_job_resumes(tmp_path):
    """One task (the 2-rank stop agreement is tested in test_fit_multirank, srun's variables above)."""
    run = tmp_path / "run"
    cfg = tiny_cfg(run)
    script = write_job(cfg, SlurmOptions(nodes=1, gpus_per_node=1, cpus_per_gpu=1, signal_seconds=120))
    assert script == run / "slurm" / "pretrain.sbatch" and script.stat().st_mode & stat.S_IXUSR
    assert load_config(run / "slurm" / "config.yaml") == cfg
    tools = _tools(tmp_path / "bin")
    job_id = free_port_in(15000, 35000) - 15000  # the script listens on 15000 + job id
    slurm_env = {
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": "node001",
        "SLURM_NTASKS": "1",
        "SLURM_CPUS_PER_TASK": "1",
        "SCONTROL_LOG": str(tmp_path / "scontrol.log"),
    }

    # SLURM's --signal=USR1@120 reaches the task; here it sends it to itself after step 3
    log1 = tmp_path / "job-1.log"
    rc = wait(start(["bash", str(script)], child_env(**slurm_env, OPENJEPA_TEST_SIGNAL_AT="3"), log1), log1)
    text = log1.read_text()
    assert rc == 0, text[-3000:]
    assert "requeueing job" in text, text[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", str(job_id)]
    state = load_checkpoint(list_checkpoints(run)[-1][1])
    assert (state["step"], state["reason"]) == (3, "preempted")  # one process: checked every step

    # the requeued job runs the same script again: --resume continues to the end
    log2 = tmp_path / "job-2.log"
    rc = wait(start(["bash", str(script)], child_env(**slurm_env), log2), log2)
    text = log2.read_text()
    assert rc == 0, text[-3000:]
    assert "resumed from" in text and "requeue" not in text.split("resumed from")[1]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", str(job_id)], "no second requeue"
    assert [s for s, _ in list_checkpoints(run)][-1] == STEPS
    baseline = tmp_path / "baseline"
    fit(tiny_cfg(baseline), progress=False)  # the same run, uninterrupted, in this process
    assert not same_params(params(baseline), params(run))
    assert losses(run) == losses(baseline)
    assert yaml.safe_load((run / "params-ijepa.yaml").read_text())["logging"]["folder"] == str(run)


def test_example_script_in_scripts_slurm_is_what_the_generator_writes():
    example = Path(__file__).resolve().parents[2] / "scripts" / "slurm" / "in1k_vith14_ep300_16gpus.sbatch"
    opts = SlurmOptions(
        nodes=2,
        gpus_per_node=8,
        cpus_per_gpu=10,
        time="72:00:00",
        partition="gpu",
        mem="0",
        python="python",
        setup=["source .venv/bin/activate  # or: module load ...; conda activate ..."],
    )
    expected = render_sbatch(opts, "runs/in1k_vith14_ep300/slurm/config.yaml", "runs/in1k_vith14_ep300")
    assert example.read_text() == expected, "regenerate scripts/slurm/ with render_sbatch (see docs/scaling.md)"


def test_requeue_status_is_the_loops():
    from openjepa.launch import slurm
    from openjepa.train import loop

    assert slurm.EXIT_REQUEUE == loop.EXIT_REQUEUE == 75
