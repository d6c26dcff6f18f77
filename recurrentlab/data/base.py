"""The dataset protocol every corpus and synthetic task follows, and the metric helpers.

A dataset hands out *windows*: ``B`` rows (streams) of ``W`` positions. Shape legend:
``b`` batch (streams), ``w`` window length in tokens.

Batch dict (all numpy):

=========== ================ ==========================================================
key          dtype / shape    meaning
=========== ================ ==========================================================
``inputs``   int32 [b, w]     tokens fed to the model
``targets``  int32 [b, w]     the next token (what position i must predict)
``mask``     float32 [b, w]   1 where the target counts in the loss and the metrics
``reset``    bool [b]         the carry of stream b must be re-initialised before this window
``episode``  int32 [b, w]     episode id of the target (exact-sequence accuracy); -1 for
                              corpora and for padding
=========== ================ ==========================================================

Windows are pure functions of ``(seed, step)``: there is no iterator state, so a resumed run
needs nothing but its step to continue with the same data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from recurrentlab.errors import DataError

SPLITS = ("train", "valid", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")


class Dataset:
    """Base class (and protocol) of every dataset built by ``build_dataset``.

    Attributes:
      vocab_size: number of token ids; every id in a batch is in ``[0, vocab_size)``.
      unit: ``"byte"``, ``"char"`` or ``"token"``: metrics are named ``bits_per_<unit>``.
      bits_per_symbol: bits in one data symbol of an NTM-style bit task (copy with 8-bit
        vectors: 8), used by :func:`bit_errors`; 0 for every other dataset.
      episodic: whether batches mark episodes (``episode`` ids >= 0), so evaluation reports
        ``exact_match`` (synthetic tasks); False for corpora.
    """

    vocab_size: int = 0
    unit: str = "token"
    bits_per_symbol: int = 0
    episodic: bool = False

    def train_window(self, step: int, batch_size: int, window_len: int) -> dict[str, np.ndarray]:
        """The training window of ``step``: a pure function of (seed, step)."""
        raise NotImplementedError

    def eval_windows(self, split: str, batch_size: int, window_len: int,
                     max_windows: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The windows of ``split`` in order (carry flows across them); ``max_windows > 0`` caps
        how many. The same windows every call."""
        raise NotImplementedError

    def num_eval_windows(self, split: str, batch_size: int, window_len: int) -> int:
        """How many windows :meth:`eval_windows` yields without a cap."""
        raise NotImplementedError

    def check_layout(self, batch_size: int, window_len: int, split: str = "train") -> None:
        """Raise :class:`DataError` if ``split`` cannot be laid out as ``batch_size`` streams of
        ``window_len``-token windows (the training split unless told)."""
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError


def episode_sums(mask, episode, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums of ``values`` over each episode of a window: ``(rows, ids, sums)``.

    An episode is the set of masked positions of one row that share an ``episode`` id. Ids are
    per row (stream), so episodes of different rows never merge. One entry per episode, in
    (row, id) order: ``sums[k]`` is the sum of ``values`` over episode ``(rows[k], ids[k])``.
    The one episode grouping of the project: :func:`episodes_exact_match` and the evaluator's
    tally across windows (``recurrentlab.train.evaluate.EpisodeTally``) both use it.

    Args:
      mask: float/bool [b, w]; only positions with mask > 0 count.
      episode: int [b, w]; positions with id -1 never count.
      values: numeric or bool [b, w].
    """
    mask = np.asarray(mask) > 0
    episode = np.asarray(episode).astype(np.int64)
    values = np.asarray(values)
    if not (values.shape == mask.shape == episode.shape) or values.ndim != 2:
        raise ValueError(f"mask, episode and values must be [b, w] alike, got "
                         f"{mask.shape}, {episode.shape}, {values.shape}")
    rows = np.broadcast_to(np.arange(mask.shape[0], dtype=np.int64)[:, None], mask.shape)
    keep = mask & (episode >= 0)
    keys = (rows[keep] << 32) | episode[keep]
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse.ravel(), weights=values[keep].astype(np.float64),
                       minlength=unique.size)
    return unique >> 32, unique & 0xFFFFFFFF, sums


def episodes_exact_match(correct, mask, episode) -> tuple[int, int]:
    """Exact-sequence accuracy counts: ``(n_exact, n_episodes)``.

    An episode (see :func:`episode_sums`) is exact when every one of its masked positions is
    ``correct``. In stream mode an episode may span windows: pass windows concatenated along
    the time axis (``np.concatenate(ws, axis=1)``) to count it once.

    Args:
      correct: bool [b, w] (argmax == target).
      mask: float/bool [b, w]; only positions with mask > 0 count.
      episode: int [b, w]; positions with id -1 never count.
    """
    correct = np.asarray(correct).astype(bool)
    _, _, wrong = episode_sums(mask, episode, ~correct)
    return int(np.sum(wrong == 0)), int(wrong.size)


def _popcount(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    as_bytes = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1).astype(np.int64)


def bit_errors(pred, target, mask, bits_per_symbol: int) -> int:
    """Total wrong bits over the masked positions (the NTM papers' "cost per sequence" summed);
    per position as :func:`bit_error_counts`."""
    per_position = bit_error_counts(pred, target, bits_per_symbol)
    return int(np.sum(per_position[np.asarray(mask) > 0]))


def bit_error_counts(pred, target, bits_per_symbol: int) -> np.ndarray:
    """Wrong bits at each position (int64, the shape of ``target``).

    For a data symbol (``0 <= target < 2**bits_per_symbol``) predicted as a data symbol, the
    error is the popcount of ``pred XOR target``. A marker target (or a marker predicted where a
    data symbol is due) counts as ``bits_per_symbol`` errors when ``pred != target``, 0 when
    equal.
    """
    if bits_per_symbol <= 0:
        raise ValueError("bit_errors needs a bit task (bits_per_symbol > 0)")
    pred = np.asarray(pred).astype(np.int64)
    target = np.asarray(target).astype(np.int64)
    limit = 1 << bits_per_symbol
    both_data = (pred >= 0) & (pred < limit) & (target >= 0) & (target < limit)
    xor_bits = _popcount(np.where(both_data, pred ^ target, 0))
    marker_bits = np.where(pred != target, bits_per_symbol, 0)
    return np.where(both_data, xor_bits, marker_bits).astype(np.int64)
