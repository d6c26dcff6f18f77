"""One run of a sweep: ``train_and_evaluate`` for a :class:`~recurrentlab.sweep.spec.RunSpec`.

    python -m recurrentlab.sweep.run_one RUN_JSON

is how :class:`~recurrentlab.sweep.launchers.LocalLauncher` starts a run (``RUN_JSON`` from
:func:`encode`); :class:`~recurrentlab.sweep.launchers.InlineLauncher` and the submitit job
call :func:`train_run` in their own process. The config is built the way the sweep checked it
(``RunSpec.load_config``: the config file's ``get_config(arg)``, then the ``--config.a.b=v``
overrides), and a run behaves like ``recurrentlab train``: it prints the final metrics as
JSON and exits 0 when finished; bad input (config, data, workdir) prints one ``error:`` line
on stderr and exits 2, and so does a run stopped by SIGTERM after saving its checkpoint
(re-running resumes it); Ctrl-C exits 130; anything else is a bug and exits 1 with its
traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from recurrentlab import xla_cpu
from recurrentlab.errors import RecurrentLabError
from recurrentlab.hostmem import reuse_freed_host_memory
from recurrentlab.sweep.spec import RunSpec


def encode(run: RunSpec) -> str:
    """``run`` as one JSON text (the overrides as their ``--config.a.b=v`` strings)."""
    return json.dumps({"name": run.name, "config_file": run.config_file,
                       "config_arg": run.config_arg, "args": run.override_args(),
                       "workdir": str(run.workdir), "log_path": str(run.log_path)})


def decode(text: str) -> RunSpec:
    """Inverse of :func:`encode`: a run whose config equals the encoded run's."""
    try:
        data = json.loads(text)
        return RunSpec(name=data["name"], config_file=data["config_file"],
                       config_arg=data["config_arg"], overrides={},
                       workdir=Path(data["workdir"]), log_path=Path(data["log_path"]),
                       extra_args=list(data["args"]))
    except (ValueError, KeyError, TypeError) as error:
        raise RecurrentLabError(f"not a run of a sweep ({type(error).__name__}: {error}); "
                                f"expected the JSON of run_one.encode") from None


def train_run(run: RunSpec) -> dict[str, Any]:
    """Train ``run`` in this process (resuming its workdir); print and return its summary's
    final metrics like ``recurrentlab train``. Raises what ``train_and_evaluate`` raises."""
    from recurrentlab.train.trainer import train_and_evaluate

    summary = train_and_evaluate(run.load_config(), run.workdir)
    print(json.dumps({"workdir": str(run.workdir), "final": summary["final"]}, indent=2),
          flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m recurrentlab.sweep.run_one RUN_JSON``; the exit status of the run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        reuse_freed_host_memory()  # before JAX's first computation (recurrentlab.hostmem)
        xla_cpu.check_mode()  # a bad RECURRENTLAB_XLA_CPU_OPTIONS stops before any write
        if len(argv) != 1:
            raise RecurrentLabError(f"usage: python -m recurrentlab.sweep.run_one RUN_JSON "
                                    f"(got {len(argv)} arguments)")
        train_run(decode(argv[0]))
    except RecurrentLabError as error:  # bad input, or preempted with its checkpoint saved
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the sweep to resume from the last checkpoint",
              file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
