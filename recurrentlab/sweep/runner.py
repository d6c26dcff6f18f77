"""``run_sweep``: every run of a sweep in its own workdir, restartable at any moment.

    DIR/manifest.json     the sweep: its runs, their overrides, status, log path, last error
    DIR/logs/<run>.log    each run's output (appended to when a run resumes)
    DIR/<run>/            each run's workdir (config.json, metrics.jsonl, checkpoints/, ...)

A run whose workdir holds ``summary.json`` is finished and is not started again; any other
run is started, and one with checkpoints resumes from the latest (the trainer does that). A
Ctrl-C or SIGTERM of the sweep stops its runs too; running the same command again picks up
where it stopped. A failing run is reported with its last error line and the others go on;
the sweep then exits non-zero.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recurrentlab.errors import ConfigError, WorkdirError
from recurrentlab.sweep.launchers import Launcher, SweepInterrupted, make_launcher
from recurrentlab.sweep.spec import RunSpec, expand

MANIFEST = "manifest.json"


def last_error_line(log_path: str | Path, max_bytes: int = 65536) -> str:
    """The line of a run's log that says why it failed: the last ``error:`` line, else the
    last exception line of a traceback, else the last non-empty line."""
    path = Path(log_path)
    if not path.exists():
        return "no log written"
    with path.open("rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if ":" in line and (head.endswith("Error") or head.endswith("Exception")
                            or head.endswith("Interrupt")):
            return line
    return lines[-1] if lines else "empty log"


class Manifest:
    """``DIR/manifest.json``, rewritten atomically on every change of a run's status."""

    def __init__(self, sweep_dir: Path, spec: str, launcher: str, extra_args: list[str]):
        self.path = sweep_dir / MANIFEST
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.old_runs = {r["name"]: r for r in old.get("runs", [])}
        self.data: dict[str, Any] = {
            "sweep": spec, "launcher": launcher, "extra_args": extra_args,
            "created": old.get("created", time.time()), "updated": time.time(), "runs": []}
        self.index: dict[str, dict[str, Any]] = {}

    def add(self, run: RunSpec, status: str) -> None:
        entry = {"name": run.name, "workdir": str(run.workdir), "config": run.config_spec,
                 "overrides": run.overrides, "log": str(run.log_path), "status": status,
                 "attempts": self.old_runs.get(run.name, {}).get("attempts", 0)}
        self.data["runs"].append(entry)
        self.index[run.name] = entry

    def update(self, name: str, **fields: Any) -> None:
        self.index[name].update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated"] = time.time()
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        tmp.replace(self.path)


def read_manifest(sweep_dir: str | Path) -> dict[str, Any] | None:
    path = Path(sweep_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def check_same_overrides(sweep_dir: Path, extra_args: list[str]) -> None:
    """A sweep folder's runs were trained with its manifest's ``extra_args``: the same command
    with other overrides would skip the finished runs (named by their own overrides) and
    record overrides they never saw, so it is refused (:class:`ConfigError`, one line)."""
    manifest = read_manifest(sweep_dir)
    if manifest is None or manifest.get("extra_args", extra_args) == extra_args:
        return
    def shown(args):
        return " ".join(a for a in args if "progress_bar" not in a) or "none"

    raise ConfigError(f"{sweep_dir} holds a sweep run with overrides "
                      f"{shown(manifest['extra_args'])}; this command gives {shown(extra_args)}: "
                      "use a new --workdir (finished runs are never rerun or overwritten)")


def _raise_interrupted(signum, frame):
    raise SweepInterrupted(signal.Signals(signum).name)


def run_sweep(spec: str, sweep_dir: str | Path, *, parallel: int = 1,
              launcher: str | Launcher = "local", extra_args: list[str] | None = None,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the sweep ``FILE[:ARG]`` under ``sweep_dir``; return the manifest.

    ``extra_args`` are ``--config.a.b=v`` strings applied to every run after its own
    overrides. Raises :class:`SweepInterrupted` after stopping the runs on SIGTERM/SIGINT.
    """
    sweep_dir = Path(sweep_dir)
    extra_args = list(extra_args or [])
    if not any(a.startswith("--config.train.progress_bar") for a in extra_args):
        extra_args.append("--config.train.progress_bar=False")  # logs are files, not terminals
    if (sweep_dir / "config.json").exists() and not (sweep_dir / MANIFEST).exists():
        raise WorkdirError(f"{sweep_dir} is the workdir of a single run (it holds config.json); "
                           f"give the sweep a --workdir of its own")
    runs = expand(spec, sweep_dir, extra_args)
    check_same_overrides(sweep_dir, extra_args)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    launcher_name = launcher if isinstance(launcher, str) else type(launcher).__name__
    if isinstance(launcher, str):
        launcher = make_launcher(launcher, parallel=parallel)

    manifest = Manifest(sweep_dir, spec, launcher_name, extra_args)
    todo: list[RunSpec] = []
    for run in runs:
        if (run.workdir / "summary.json").exists():
            manifest.add(run, "finished")
        else:
            manifest.add(run, "pending")
            todo.append(run)
    manifest.save()
    skipped = len(runs) - len(todo)
    echo(f"sweep {spec}: {len(runs)} runs in {sweep_dir} ({skipped} finished already, "
         f"{len(todo)} to run, {launcher.max_parallel} at a time)")

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: the caller handles them
            previous[signum] = signal.signal(signum, _raise_interrupted)
    active: list = []
    started: dict[str, float] = {}
    done = skipped
    try:
        queue = list(todo)
        while queue or active:
            while queue and len(active) < launcher.max_parallel:
                run = queue.pop(0)
                resumed = (run.workdir / "checkpoints").is_dir()
                attempts = manifest.index[run.name]["attempts"] + 1
                manifest.update(run.name, status="running", started=time.time(),
                                attempts=attempts, resumed=resumed)
                started[run.name] = time.time()
                job = launcher.submit(run)
                active.append(job)
                if getattr(job, "pid", None) is not None:
                    manifest.update(run.name, pid=job.pid)
                echo(f"[start] {run.name}{' (resuming)' if resumed else ''}")
            for job, code in launcher.wait(active, timeout=5.0):
                active.remove(job)
                name = job.run.name
                seconds = time.time() - started[name]
                done += 1
                finished = code == 0 and (job.run.workdir / "summary.json").exists()
                if finished:
                    manifest.update(name, status="finished", returncode=code, error=None,
                                    ended=time.time(), seconds=seconds)
                    echo(f"[{done}/{len(runs)}] finished {name} in {seconds:.0f}s")
                else:
                    error = last_error_line(job.run.log_path)
                    manifest.update(name, status="failed", returncode=code, error=error,
                                    ended=time.time(), seconds=seconds)
                    echo(f"[{done}/{len(runs)}] FAILED {name} (exit {code}): {error}  "
                         f"[log: {job.run.log_path}]")
    except (SweepInterrupted, KeyboardInterrupt) as why:
        for signum in previous:  # a second Ctrl-C must not cut the stopping short
            signal.signal(signum, signal.SIG_IGN)
        launcher.stop(active)
        for job in active:  # a run may have written its summary just before the signal
            finished = (job.run.workdir / "summary.json").exists()
            manifest.update(job.run.name, status="finished" if finished else "interrupted",
                            ended=time.time())
        echo(f"sweep interrupted ({why or 'SIGINT'}); stopped {len(active)} running run(s); "
             f"re-run the same command to resume")
        raise SweepInterrupted(str(why) or "SIGINT") from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        manifest.save()
        sys.stdout.flush()
    return manifest.data


def failed_runs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in manifest["runs"] if r["status"] == "failed"]
