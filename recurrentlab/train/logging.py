"""Where a run's numbers go: ``metrics.jsonl`` (the source of truth), TensorBoard, a bar."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def _plain(value: Any) -> Any:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else str(value)


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch.

    tensorboardX imports torch, when installed, only to accept torch tensors; scalars need
    none of it, and the import costs seconds in every training process.
    """
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # makes `import torch` raise ImportError, which it handles
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """Appends ``{"kind", "step", "time", ...metrics}`` lines and mirrors them to TensorBoard.

    ``metrics.jsonl`` is only appended to: a resumed run adds a ``{"kind": "resume"}`` line
    and re-logs steps after its checkpoint; readers keep the last record per (kind, step,
    split).
    """

    def __init__(self, workdir: Path, *, total_steps: int, start_step: int, progress_bar: bool,
                 is_main: bool = True):
        self.is_main = is_main
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if is_main:
            self._tb = _summary_writer_class()(str(Path(workdir) / "tensorboard"), flush_secs=10)
        self._bar = None
        if is_main and progress_bar:
            self._bar = tqdm(total=total_steps, initial=start_step, file=sys.stderr,
                             dynamic_ncols=True, unit="step")

    def write(self, kind: str, step: int, metrics: dict[str, Any]) -> None:
        if not self.is_main:
            return
        record = {"kind": kind, "step": int(step), "time": time.time()}
        record.update({k: _plain(v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name not in ("kind", "step", "time") and isinstance(value, float):
                self._tb.add_scalar(f"{kind}/{name}", value, step)
        if self._bar is not None and kind == "train":
            shown = {k: f"{record[k]:.4g}" for k in ("loss", "tokens_per_sec") if k in record}
            self._bar.set_postfix(shown, refresh=False)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def read_metrics(workdir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``, last one per (kind, step, split), in step order."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    latest: dict[tuple[str, int, str], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill; the step is re-logged after resume
        if record.get("kind") == "resume" or (kind and record.get("kind") != kind):
            continue
        latest[(record["kind"], record["step"], str(record.get("split", "")))] = record
    return [latest[k] for k in sorted(latest, key=lambda k: (k[1], k[0], k[2]))]
