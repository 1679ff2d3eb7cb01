"""Launchers: batch scripts for cluster schedulers (SLURM). Nothing here is needed to train on one machine."""

from .slurm import SlurmOptions, render_sbatch, submit, write_job

__all__ = ["SlurmOptions", "render_sbatch", "write_job", "submit"]
