"""Evaluation: a whole split in order, carrying state, with the metrics a paper reports.

* ``loss``: mean nll (nats) over masked target tokens; ``bits_per_<unit>`` = loss / ln 2;
* ``accuracy``: argmax hits over masked positions;
* ``exact_match``: fraction of episodes whose masked positions are all right (synthetic tasks);
* ``bit_errors``: mean wrong bits per episode for bit-vector tasks (NTM copy, recall).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from recurrentlab.data import bit_errors
from recurrentlab.models.base import reset_carry
from recurrentlab.train.step import window_outputs


class EpisodeTally:
    """Per-episode accumulation across windows (an episode may span windows in stream mode)."""

    def __init__(self, batch_size: int):
        self.epoch = np.zeros(batch_size, np.int64)  # bumps on every carry reset of a stream
        self.all_right: dict[tuple[int, int, int], bool] = {}
        self.bit_errors: dict[tuple[int, int, int], int] = {}

    def add(self, window: int, batch: dict[str, np.ndarray], pred: np.ndarray,
            bits_per_symbol: int) -> None:
        self.epoch = np.where(batch["reset"], window, self.epoch)
        episodes, mask, targets = batch["episode"], batch["mask"] > 0, batch["targets"]
        for b in range(episodes.shape[0]):
            rows = mask[b] & (episodes[b] >= 0)
            for e in np.unique(episodes[b][rows]):
                at = rows & (episodes[b] == e)
                key = (int(self.epoch[b]), b, int(e))
                right = bool(np.all(pred[b][at] == targets[b][at]))
                self.all_right[key] = self.all_right.get(key, True) and right
                if bits_per_symbol:
                    wrong = bit_errors(pred[b], targets[b], at, bits_per_symbol)
                    self.bit_errors[key] = self.bit_errors.get(key, 0) + wrong

    def metrics(self) -> dict[str, float]:
        if not self.all_right:
            return {}
        out = {"exact_match": float(np.mean(list(self.all_right.values()))),
               "episodes": float(len(self.all_right))}
        if self.bit_errors:
            out["bit_errors"] = float(np.mean(list(self.bit_errors.values())))
        return out


def make_eval_fn(graphdef, segment_len: int) -> Callable:
    @jax.jit
    def eval_window(state, carry, fresh, batch):
        model = nnx.merge(graphdef, state)
        carry = reset_carry(carry, fresh, batch["reset"])
        return window_outputs(model, carry, batch, segment_len=segment_len)

    return eval_window


def evaluate(
    model: nnx.Module,
    dataset: Any,
    *,
    split: str,
    batch_size: int,
    segment_len: int,
    window_segments: int,
    max_windows: int = 0,
    put: Callable[[Any], Any] = lambda x: x,
    fetch: Callable[[Any], np.ndarray] = np.asarray,
) -> dict[str, float]:
    """Run ``split`` in order with the carry; return loss, bits, accuracy and episode metrics.

    ``put`` places a host batch on devices, ``fetch`` brings a device result back (across
    hosts in a multi-process run)."""
    graphdef, state = nnx.split(model)
    eval_window = make_eval_fn(graphdef, segment_len)
    fresh = put(model.init_carry(batch_size))
    carry = fresh
    nll_sum = count = correct = 0.0
    tally = EpisodeTally(batch_size)
    windows = dataset.eval_windows(split, batch_size, segment_len * window_segments, max_windows)
    for index, batch in enumerate(windows):
        device_batch = put({k: batch[k] for k in ("inputs", "targets", "mask", "reset")})
        carry, nll, pred = eval_window(state, carry, fresh, device_batch)
        nll, pred = np.asarray(fetch(nll), np.float64), np.asarray(fetch(pred))
        mask = batch["mask"].astype(np.float64)
        nll_sum += float((nll * mask).sum())
        count += float(mask.sum())
        correct += float(((pred == batch["targets"]) * mask).sum())
        if np.any(batch["episode"] >= 0):
            tally.add(index, batch, pred, getattr(dataset, "bits_per_symbol", 0))
    loss = nll_sum / max(count, 1.0)
    metrics = {"loss": loss, f"bits_per_{dataset.unit}": loss / math.log(2),
               "accuracy": correct / max(count, 1.0), "tokens": count}
    metrics.update(tally.metrics())
    return metrics
