"""Launchers start the runs of a sweep; the sweep runner only submits and waits.

A launcher is anything with this small protocol (:class:`Launcher`):

* ``submit(run) -> Job``: start ``run`` (a :class:`~recurrentlab.sweep.spec.RunSpec`:
  config file and argument, overrides, workdir, log path) and return at once;
* ``wait(jobs, timeout) -> list[(job, returncode)]``: block until at least one of ``jobs``
  ends (or ``timeout`` seconds pass) and return the ended ones with their exit status;
* ``stop(jobs)``: end ``jobs`` so that a later sweep resumes them from their checkpoints;
* ``max_parallel``: how many runs may be in flight at once.

A run must behave like ``recurrentlab train``: exit 0 when finished, non-zero otherwise,
and write its output to ``run.log_path``. Every launcher trains a run with
``train_and_evaluate`` through :mod:`recurrentlab.sweep.run_one`: :class:`LocalLauncher`
runs each as a subprocess of that entry point (``python -m recurrentlab.sweep.run_one RUN``)
on this machine; :class:`InlineLauncher` (``--launcher inline``) runs them one by one inside
the sweep's own process, for notebooks and debugging. A cluster launcher (submitit, Ray)
registers itself with :func:`register_launcher` and is picked with
``recurrentlab sweep --launcher NAME``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from recurrentlab.errors import ConfigError
from recurrentlab.sweep.spec import RunSpec


@runtime_checkable
class Job(Protocol):
    run: RunSpec


@runtime_checkable
class Launcher(Protocol):
    max_parallel: int

    def submit(self, run: RunSpec) -> Job: ...

    def wait(self, jobs: list[Job], timeout: float | None = None) -> list[tuple[Job, int]]: ...

    def stop(self, jobs: list[Job]) -> None: ...


class SweepInterrupted(KeyboardInterrupt):
    """The sweep got SIGTERM or SIGINT: its runs are stopped and a re-run resumes them."""


_LAUNCHERS: dict[str, Callable[..., Launcher]] = {}


def register_launcher(name: str):
    """Class decorator: make ``--launcher name`` build this launcher as ``cls(parallel=N)``."""

    def add(cls):
        _LAUNCHERS[name] = cls
        return cls

    return add


def registered_launchers() -> list[str]:
    return sorted(_LAUNCHERS)


# Modules that register further launchers; imported when a name is not registered yet.
_LAUNCHER_MODULES = ("recurrentlab.sweep.launchers_cluster",)


def make_launcher(name: str, *, parallel: int = 1) -> Launcher:
    if name not in _LAUNCHERS:
        import importlib
        import importlib.util

        for module in _LAUNCHER_MODULES:
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
    if name not in _LAUNCHERS:
        raise ConfigError(f"unknown launcher '{name}' (launchers: "
                          f"{', '.join(registered_launchers())})")
    return _LAUNCHERS[name](parallel=parallel)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the sweep process dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C and SIGTERM of the sweep still stop the runs


class LocalJob:
    def __init__(self, run: RunSpec, process: subprocess.Popen, log):
        self.run = run
        self.process = process
        self.pid = process.pid
        self._log = log

    def close(self) -> None:
        if not self._log.closed:
            self._log.close()


@register_launcher("local")
class LocalLauncher:
    """Each run a ``python -m recurrentlab.sweep.run_one`` subprocess, ``parallel`` at a time.

    Runs start in their own session, so a Ctrl-C reaches the sweep, which then stops them
    with SIGTERM (the trainer saves a checkpoint of its current step and exits; SIGKILL
    after ``grace`` seconds). A run also gets SIGTERM if the sweep process dies (Linux).
    """

    def __init__(self, parallel: int = 1, *, python: str = sys.executable, grace: float = 20.0,
                 poll_seconds: float = 0.2):
        if parallel < 1:
            raise ConfigError(f"--parallel must be >= 1, got {parallel}")
        self.max_parallel = parallel
        self.python = python
        self.grace = grace
        self.poll_seconds = poll_seconds

    def submit(self, run: RunSpec) -> LocalJob:
        from recurrentlab.sweep import run_one  # (not at import: it is also the __main__)

        Path(run.log_path).parent.mkdir(parents=True, exist_ok=True)
        log = open(run.log_path, "a")  # noqa: SIM115 (open while the run lives; appended on resume)
        log.write(f"$ recurrentlab {' '.join(run.train_argv())}\n")  # the same run by hand
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [self.python, "-m", "recurrentlab.sweep.run_one", run_one.encode(run)], stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        return LocalJob(run, process, log)

    def wait(self, jobs: list[LocalJob], timeout: float | None = None
             ) -> list[tuple[LocalJob, int]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ended = [(job, job.process.poll()) for job in jobs]
            ended = [(job, code) for job, code in ended if code is not None]
            if ended or not jobs or (deadline is not None and time.monotonic() >= deadline):
                for job, _ in ended:
                    job.close()
                return ended
            time.sleep(self.poll_seconds)

    def stop(self, jobs: list[LocalJob]) -> None:
        for job in jobs:
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for job in jobs:
            try:
                job.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
            job.close()


class InlineJob:
    def __init__(self, run: RunSpec):
        self.run = run
        self.returncode: int | None = None


@register_launcher("inline")
class InlineLauncher:
    """Runs one after another inside this process (``train_and_evaluate``), output to each
    run's log: no interpreter start-up per run, compiled steps shared between runs. For
    notebooks, debugging and tiny sweeps; ``parallel`` is ignored."""

    def __init__(self, parallel: int = 1):
        del parallel
        self.max_parallel = 1

    def submit(self, run: RunSpec) -> InlineJob:
        return InlineJob(run)

    def wait(self, jobs: list[InlineJob], timeout: float | None = None
             ) -> list[tuple[InlineJob, int]]:
        del timeout
        if not jobs:
            return []
        job = jobs[0]
        job.returncode = run_inline(job.run)
        return [(job, job.returncode)]

    def stop(self, jobs: list[InlineJob]) -> None:
        del jobs  # nothing runs between calls of wait


def run_inline(run: RunSpec) -> int:
    """``train_and_evaluate`` for ``run`` in this process
    (:func:`~recurrentlab.sweep.run_one.train_run`), its output (Python's ``sys.stdout`` and
    ``sys.stderr``) appended to ``run.log_path``; the exit status ``recurrentlab train`` would
    give: 0 finished, 2 bad input, 1 a bug (the traceback goes to the log and the sweep goes
    on). A SIGTERM (the trainer saved a checkpoint) stops the sweep: :class:`SweepInterrupted`.
    """
    import contextlib
    import traceback

    from recurrentlab.errors import RecurrentLabError
    from recurrentlab.sweep import run_one
    from recurrentlab.train.distributed import Preempted

    Path(run.log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(run.log_path, "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        print(f"$ recurrentlab {' '.join(run.train_argv())}  (inline)", flush=True)
        try:
            run_one.train_run(run)
        except Preempted as error:  # SIGTERM: the trainer saved a checkpoint; stop the sweep
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SweepInterrupted("SIGTERM") from None
        except RecurrentLabError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 2
        except Exception:  # a bug: the traceback goes to the run's log, the sweep goes on
            traceback.print_exc()
            return 1
    return 0
