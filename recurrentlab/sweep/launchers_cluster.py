"""Sweeps across machines: the ``submitit`` launcher (Slurm, or local processes).

    recurrentlab sweep FILE --workdir DIR --launcher submitit [--parallel N]

Every run of the sweep becomes one submitit job. On a machine with Slurm (``sbatch`` on the
``PATH``) the jobs are Slurm jobs; elsewhere submitit's ``LocalExecutor`` runs them as local
processes, which is also what the tests use: real submitit code, real pickled jobs, real
subprocesses. Set ``RECURRENTLAB_SUBMITIT_CLUSTER=slurm|local|debug`` to choose explicitly,
and ``RECURRENTLAB_SUBMITIT="slurm_partition=gpu,gpus_per_node=1,timeout_min=240"`` for the
executor's parameters (submitit's ``AutoExecutor.update_parameters`` names; values are Python
literals). Install with ``pip install 'recurrentlab[cluster]'``.

Why submitit (Slurm) and not Ray: the machines this project's sweeps run on are GPU nodes
behind Slurm (university and lab clusters) and Cloud TPU VMs. Slurm already queues, places,
preempts and requeues jobs; submitit is a 76 kB pure-Python client for it that needs no
long-lived service, no open ports between nodes and no cluster of its own, and its local
executor runs the same code on a laptop. Ray would add a 60 MB+ dependency and a head node to
keep alive, for scheduling that Slurm does anyway; our runs are independent processes that
resume from their own checkpoints, so Ray's task graph and object store buy nothing here.

A job trains its run as ``recurrentlab train`` would (:func:`recurrentlab.sweep.run_one.main`)
in the job's own process (so SIGTERM from ``scancel`` or a preemption reaches the trainer,
which checkpoints the current step and stops), writes its output to the run's log, and returns
the run's exit status. On a Slurm timeout warning (``USR2``), submitit calls
:meth:`TrainCommand.checkpoint` and requeues the job, which resumes from the run's latest
checkpoint. A multi-task job (``tasks_per_node``/``nodes`` > 1) is one multi-host run:
jax.distributed finds the Slurm tasks itself; rank 0 writes the run's log and the other ranks
write ``<log>.rank<N>``.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from recurrentlab.errors import ConfigError
from recurrentlab.sweep.launchers import register_launcher
from recurrentlab.sweep.spec import RunSpec

DEFAULT_TIMEOUT_MIN = 24 * 60  # submitit's local default (2 min) would kill real runs


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("the submitit launcher needs submitit: pip install "
                          "'recurrentlab[cluster]' (or pip install submitit)") from None
    return submitit


def parse_parameters(text: str) -> dict[str, Any]:
    """``"a=1,b=gpu"`` -> ``{"a": 1, "b": "gpu"}`` (values as Python literals, else strings)."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"RECURRENTLAB_SUBMITIT entry '{item}' is not key=value")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


class TrainCommand:
    """The pickled job: ``run`` trained in the job process (:mod:`recurrentlab.sweep.run_one`,
    as ``recurrentlab train`` would), its output (file descriptors 1 and 2) to its log."""

    def __init__(self, run: RunSpec):
        self.run = run
        self.log_path = str(run.log_path)

    def _log_file(self) -> str:
        rank = 0
        try:
            import submitit

            rank = submitit.JobEnvironment().global_rank
        except (ImportError, RuntimeError):
            pass
        return self.log_path if rank == 0 else f"{self.log_path}.rank{rank}"

    def __call__(self) -> int:
        from recurrentlab.sweep import run_one

        path = Path(self._log_file())
        path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with path.open("a") as log:
            log.write(f"$ recurrentlab {' '.join(self.run.train_argv())}\n")
            log.flush()
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                code = run_one.main([run_one.encode(self.run)])
            except SystemExit as stop:  # anything that calls sys.exit
                code = stop.code if isinstance(stop.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        return int(code or 0)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Requeue on timeout or preemption; the run resumes from its latest checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(TrainCommand(self.run))


class SubmititJob:
    def __init__(self, run: RunSpec, job: Any):
        self.run = run
        self.job = job

    def returncode(self) -> int:
        try:
            result = self.job.result()
        except Exception:  # failed, cancelled or killed: the run's log says why
            return 1
        return result if isinstance(result, int) else 0


@register_launcher("submitit")
class SubmititLauncher:
    """Each run one submitit job; at most ``parallel`` in flight (Slurm may queue them)."""

    def __init__(self, parallel: int = 1, *, cluster: str | None = None,
                 parameters: dict[str, Any] | None = None, poll_seconds: float = 1.0,
                 grace: float = 60.0):
        self.submitit = _import_submitit()
        if parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {parallel}")
        self.max_parallel = parallel
        cluster = cluster or os.environ.get("RECURRENTLAB_SUBMITIT_CLUSTER") or None
        if cluster is None:
            cluster = "slurm" if shutil.which("sbatch") else "local"
        if cluster not in ("slurm", "local", "debug"):
            raise ConfigError(f"submitit cluster '{cluster}' unknown; use slurm, local or debug")
        self.cluster = cluster
        self.parameters = {"timeout_min": DEFAULT_TIMEOUT_MIN,
                           **parse_parameters(os.environ.get("RECURRENTLAB_SUBMITIT", "")),
                           **(parameters or {})}
        self.poll_seconds = poll_seconds
        self.grace = grace
        self._executors: dict[Path, Any] = {}

    def _executor(self, folder: Path):
        if folder not in self._executors:
            executor = self.submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
            executor.update_parameters(name="recurrentlab", **self.parameters)
            self._executors[folder] = executor
        return self._executors[folder]

    def submit(self, run: RunSpec) -> SubmititJob:
        folder = Path(run.log_path).parent / "submitit"
        job = self._executor(folder).submit(TrainCommand(run))
        return SubmititJob(run, job)

    def wait(self, jobs: list[SubmititJob], timeout: float | None = None
             ) -> list[tuple[SubmititJob, int]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ended = [(job, job.returncode()) for job in jobs if job.job.done()]
            if ended or not jobs or (deadline is not None and time.monotonic() >= deadline):
                return ended
            time.sleep(self.poll_seconds)

    def stop(self, jobs: list[SubmititJob]) -> None:
        """Cancel ``jobs`` (Slurm: scancel, i.e. SIGTERM, so each run checkpoints first)."""
        for job in jobs:
            if not job.job.done():
                job.job.cancel(check=False)
        deadline = time.monotonic() + self.grace
        while any(not job.job.done() for job in jobs) and time.monotonic() < deadline:
            time.sleep(self.poll_seconds)
