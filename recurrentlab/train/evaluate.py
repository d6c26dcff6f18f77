"""Evaluation: a whole split in order, carrying state, with the metrics a paper reports.

* ``loss``: mean nll (nats) over masked target tokens; ``bits_per_<unit>`` = loss / ln 2;
* ``accuracy``: argmax hits over masked positions;
* ``exact_match``: fraction of episodes whose masked positions are all right (synthetic tasks);
* ``bit_errors``: mean wrong bits per episode for bit-vector tasks (NTM copy, recall).

An :class:`Evaluator` is built once per model and :class:`EvalSettings` and compiles its
window once; the trainer and ``recurrentlab eval`` call it with the parameters to evaluate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from recurrentlab import xla_cpu
from recurrentlab.data import bit_error_counts, episode_sums
from recurrentlab.models.base import reset_carry
from recurrentlab.train.step import window_outputs


def metric_names(dataset: Any) -> set[str]:
    """The metrics an :class:`Evaluator` reports on ``dataset`` (``train.stop_when`` is checked
    against them before a run starts)."""
    names = {"loss", f"bits_per_{dataset.unit}", "accuracy", "tokens"}
    if getattr(dataset, "episodic", False):
        names |= {"exact_match", "episodes"}
    if getattr(dataset, "bits_per_symbol", 0):
        names.add("bit_errors")
    return names


class EpisodeTally:
    """Per-episode accumulation across windows (an episode may span windows in stream mode)."""

    def __init__(self, batch_size: int):
        self.epoch = np.zeros(batch_size, np.int64)  # bumps on every carry reset of a stream
        self.all_right: dict[tuple[int, int, int], bool] = {}
        self.bit_errors: dict[tuple[int, int, int], int] = {}

    def add(self, window: int, batch: dict[str, np.ndarray], pred: np.ndarray,
            bits_per_symbol: int) -> None:
        """Count window ``window``'s episodes (grouped by :func:`~recurrentlab.data.episode_sums`)
        into the episodes they continue; a stream's reset starts new ones."""
        self.epoch = np.where(batch["reset"], window, self.epoch)
        mask, episodes, targets = batch["mask"], batch["episode"], batch["targets"]
        rows, ids, wrong = episode_sums(mask, episodes, pred != targets)
        if bits_per_symbol:
            _, _, bits = episode_sums(mask, episodes,
                                      bit_error_counts(pred, targets, bits_per_symbol))
        for k, (b, e) in enumerate(zip(rows.tolist(), ids.tolist(), strict=True)):
            key = (int(self.epoch[b]), b, e)
            self.all_right[key] = self.all_right.get(key, True) and bool(wrong[k] == 0)
            if bits_per_symbol:
                self.bit_errors[key] = self.bit_errors.get(key, 0) + int(bits[k])

    def metrics(self) -> dict[str, float]:
        if not self.all_right:
            return {}
        out = {"exact_match": float(np.mean(list(self.all_right.values()))),
               "episodes": float(len(self.all_right))}
        if self.bit_errors:
            out["bit_errors"] = float(np.mean(list(self.bit_errors.values())))
        return out


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How a run evaluates: ``batch_size`` streams, windows of ``window_segments`` model calls of
    ``segment_len`` tokens each, ``max_windows`` windows (0: the whole split)."""

    batch_size: int
    segment_len: int
    window_segments: int
    max_windows: int = 0

    @property
    def window_len(self) -> int:
        return self.segment_len * self.window_segments

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> EvalSettings:
        """The one place a run config turns into evaluation settings (trainer, ``eval``)."""
        return cls(batch_size=config.eval.batch_size,
                   segment_len=config.eval.segment_len or config.train.segment_len,
                   window_segments=config.train.bptt_segments,
                   max_windows=config.eval.max_windows)


class Evaluator:
    """Evaluation of one model graph at fixed shapes, traced and compiled once.

    ``evaluator(params, split)`` runs ``split`` in order with the carry and returns its
    metrics. The model's structure and non-parameter state are fixed at construction; the
    parameters are an argument, so a trainer evaluating every ``eval_every`` steps (or
    ``recurrentlab eval`` on several splits) reuses the compiled window instead of tracing and
    compiling it again. With a ``placement`` batches and carry are split over the data axis
    and results gathered from every process.
    """

    def __init__(self, model: nnx.Module, dataset: Any, settings: EvalSettings, *,
                 placement: Any = None):
        self.dataset, self.settings = dataset, settings
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)
        self._rest = placement.replicate(rest) if placement is not None else rest
        self._put = placement.batch if placement is not None else (lambda tree: tree)
        self._fetch = placement.fetch if placement is not None else np.asarray
        rows = placement.sharded if placement is not None else None  # batch-first outputs
        batch_size, segment_len = settings.batch_size, settings.segment_len

        def eval_start(params, rest):
            return nnx.merge(graphdef, params, rest).init_carry(batch_size)

        def eval_window(params, rest, carry, batch):
            model = nnx.merge(graphdef, params, rest)
            carry = reset_carry(carry, model.init_carry(batch_size), batch["reset"])
            return window_outputs(model, carry, batch, segment_len=segment_len)

        self._start = xla_cpu.jit(eval_start, out_shardings=rows)
        self._window = xla_cpu.jit(eval_window, out_shardings=rows)

    def __call__(self, params: nnx.State, split: str) -> dict[str, float]:
        """Loss, bits, accuracy and episode metrics of ``split`` under ``params``."""
        dataset, settings = self.dataset, self.settings
        carry = self._start(params, self._rest)
        nll_sum = count = correct = 0.0
        tally = EpisodeTally(settings.batch_size)
        windows = dataset.eval_windows(split, settings.batch_size, settings.window_len,
                                       settings.max_windows)
        for index, batch in enumerate(windows):
            device_batch = self._put({k: batch[k] for k in ("inputs", "targets", "mask", "reset")})
            carry, nll, pred = self._window(params, self._rest, carry, device_batch)
            nll, pred = np.asarray(self._fetch(nll), np.float64), np.asarray(self._fetch(pred))
            mask = batch["mask"].astype(np.float64)
            nll_sum += float((nll * mask).sum())
            count += float(mask.sum())
            correct += float(((pred == batch["targets"]) * mask).sum())
            if np.any(batch["episode"] >= 0):
                tally.add(index, batch, pred, getattr(dataset, "bits_per_symbol", 0))
        # No scored target in the whole split (a tiny evaluation of an episodic task): NaN,
        # not a loss of 0 and an accuracy below chance.
        loss = nll_sum / count if count else math.nan
        metrics = {"loss": loss, f"bits_per_{dataset.unit}": loss / math.log(2),
                   "accuracy": correct / count if count else math.nan, "tokens": count}
        metrics.update(tally.metrics())
        return metrics


def evaluate(
    model: nnx.Module,
    dataset: Any,
    *,
    split: str,
    batch_size: int,
    segment_len: int,
    window_segments: int,
    max_windows: int = 0,
    placement: Any = None,
) -> dict[str, float]:
    """One evaluation of ``model`` on ``split`` (an :class:`Evaluator` used once).

    Code that evaluates repeatedly keeps an :class:`Evaluator` instead, which compiles once."""
    settings = EvalSettings(batch_size=batch_size, segment_len=segment_len,
                            window_segments=window_segments, max_windows=max_windows)
    evaluator = Evaluator(model, dataset, settings, placement=placement)
    return evaluator(nnx.state(model, nnx.Param), split)
