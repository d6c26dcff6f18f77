"""Synthetic algorithmic tasks as token sequences with a loss mask; deterministic and resumable.

Every task draws an *episode* — a token sequence and the set of its positions that are
answers — as a pure function of ``(seed, split, index, stream)``: draw c of an episode is
splitmix64 of those numbers and c (:class:`Draws`), with split 0 for train, 1 for valid, 2
for test, ``index`` the window (episodic mode) or slot (stream mode) and ``stream`` the row.
Counter-based draws let a whole window be generated with array operations while each row
stays independent of the batch size and of every other row. The model reads an episode as a
language model: position i predicts token i + 1, and only answer tokens are targets with
mask 1.

Token ids
---------
Data symbols come first, ``0 .. n-1`` (n depends on the task), then six special tokens, then
(repeat copy only) the repeat-count tokens:

=========  ==========  ===================================================================
id         name        role
=========  ==========  ===================================================================
n + 0      ``<pad>``   fills a row (episodic) or a slot (stream) after an episode; never
                       a target with mask 1
n + 1      ``<blank>`` fed *instead of* an answer token when ``teacher_forcing`` is False:
                       as in the NTM paper, the model gets no input while it answers
n + 2      ``<sep>``   delimiter: end of the input sequence (copy, reverse); left bound of
                       each item (associative recall)
n + 3      ``<query>`` query marker (associative recall, associative retrieval, delayed
                       recall)
n + 4      ``<end>``   end-of-output marker (repeat copy), itself an answer
n + 5      ``<mark>``  start marker before the value to remember (delayed recall)
n + 6 + k  ``<xK>``    repeat count K = k + 1 (repeat copy)
=========  ==========  ===================================================================

Tasks (``L`` sequence length, answers in brackets)
--------------------------------------------------
``copy`` (NTM paper, Graves et al. 2014): ``x_1..x_L <sep> [x_1..x_L]``. Symbols are 8-bit
    vectors as tokens ``0..2^bits-1``; ``L`` uniform in ``[min_len, max_len]`` (1..20).
``repeat_copy`` (NTM): ``x_1..x_L <xN> [x_1..x_L]*N [<end>]``; ``L`` in 1..10, ``N`` in
    1..10. The count token is both the delimiter and the count (the paper feeds a
    normalised scalar on an extra input channel).
``associative_recall`` (NTM): ``<sep> item_1 <sep> item_2 ... <sep> item_k <query> item_q
    <query> [item_{q+1}]`` with ``k`` in 2..6 distinct items of ``item_len`` = 3 six-bit
    vectors (tokens 0..63), ``q`` uniform in ``1..k-1``.
``reverse`` (RMT paper, Bulatov et al. 2022): ``x_1..x_L <sep> [x_L..x_1]`` over
    ``num_symbols`` symbols, ``L`` = 24 by default (the authors' copy/reverse generators:
    fixed length, random symbols; their reverse120 uses L = 120).
``associative_retrieval`` (RMT; the fast-weights task of Ba et al. 2016 as in the authors'
    ``retrieval.py``): ``k_1 v_1 .. k_K v_K q <query> [v]``. Values are ``0..num_values-1``,
    keys ``num_values..num_values+num_keys-1``; keys are distinct, values distinct while
    ``K <= num_values`` (else drawn with replacement, as the authors do); ``q`` is one of the
    keys, ``v`` its value. The authors' marker token after the query is ``<query>``.
``delayed_recall`` (the BPTT-horizon probe): ``<mark> v d_1..d_D <query> [v]`` with ``v``
    and the ``D = distance`` distractors uniform over ``num_symbols`` symbols. Only the final
    ``v`` is scored: it can be answered only if the carry remembers D + 2 tokens back. With
    ``min_distance`` >= 0, D is uniform in ``[min_distance, distance]`` per episode (padded
    to ``distance + 4`` tokens): short episodes give a model a learning signal before it can
    carry the value far (a mixture curriculum); evaluate at one distance with
    ``eval_overrides.min_distance = distance``.

Modes
-----
``episodic``: row b of a window is one episode, left-aligned and padded with ``<pad>`` (mask 0);
    ``reset`` is all true; an episode must fit the window (``T <= W + 1`` tokens, since a row
    holds W inputs and W targets), else :class:`DataError`.
``stream``: each stream is an endless sequence of fixed-size slots, slot s holding episode s
    padded to the task's longest episode, so position -> episode is ``p // slot_len``; windows
    cut the stream like a corpus (inputs ``[t W, t W + W)``, targets shifted by one), an
    episode may span windows, and ``reset`` is true only at step 0.

``episode`` ids in a batch are per row: the window index (episodic) or the slot index mod
2^31 (stream) on the episode's target positions, -1 on padding.

Evaluation uses ``eval_windows`` windows of a held-out seed (split tag 1 or 2), the same on
every call, generated with the task fields updated by ``eval_overrides`` (for example longer
sequences to test length generalisation). Fields that fix the alphabet (``bits``,
``item_len``, ``num_symbols``, ``num_keys``, ``num_values``) cannot be overridden for
evaluation; the vocabulary makes room for the larger repeat count of the two.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from recurrentlab.data.base import Dataset, check_split
from recurrentlab.errors import ConfigError, DataError

SPECIALS = ("pad", "blank", "sep", "query", "end", "mark")
SPLIT_TAGS = {"train": 0, "valid": 1, "test": 2}
ID_WRAP = 2**31


@dataclass(frozen=True)
class Layout:
    """Token ids of one task instance (see the module docstring)."""

    num_data: int
    num_counts: int = 0

    @property
    def pad(self) -> int:
        return self.num_data

    @property
    def blank(self) -> int:
        return self.num_data + 1

    @property
    def sep(self) -> int:
        return self.num_data + 2

    @property
    def query(self) -> int:
        return self.num_data + 3

    @property
    def end(self) -> int:
        return self.num_data + 4

    @property
    def mark(self) -> int:
        return self.num_data + 5

    def count(self, n: int) -> int:
        """Token of repeat count ``n`` (1-based)."""
        return self.num_data + len(SPECIALS) + n - 1

    @property
    def vocab_size(self) -> int:
        return self.num_data + len(SPECIALS) + self.num_counts


_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijection of uint64 that scrambles every bit."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


class Draws:
    """Counter-based random numbers for N episodes at once.

    Draw c of episode (seed, split, index, stream) is ``splitmix64`` of those four numbers
    and c, so an episode is a pure function of its key — independent of the batch size, of
    the other rows, and of the order windows are asked for — while a whole window is
    generated with array operations instead of one Generator per episode. Each call consumes
    the next counters; tasks draw in a fixed program order.
    """

    def __init__(self, seed: int, tag: int, index: np.ndarray, stream: np.ndarray):
        with np.errstate(over="ignore"):
            base = _mix(np.full(1, seed, np.uint64) * _GOLDEN + np.uint64(tag))
            key = _mix(base ^ (np.asarray(index, np.uint64) * _GOLDEN))
            self.key = _mix(key ^ (np.asarray(stream, np.uint64) * _MIX1))[:, None]
        self.n = len(self.key)
        self.used = 0

    def raw(self, size: int) -> np.ndarray:
        """uint64 [N, size] of fresh random bits."""
        counters = np.arange(self.used, self.used + size, dtype=np.uint64)[None, :]
        self.used += size
        with np.errstate(over="ignore"):
            return _mix(self.key + (counters + np.uint64(1)) * _GOLDEN)

    def integers(self, high, size: int | None = None) -> np.ndarray:
        """Uniform in ``[0, high)`` (high < 2^32; an int or an int [N] array): int64 [N] or
        [N, size]. Multiply-shift of the top 32 bits; bias below 2^-32 * high."""
        bits = self.raw(1 if size is None else size) >> np.uint64(32)
        high = np.asarray(high, dtype=np.uint64).reshape(-1, 1)
        out = ((bits * high) >> np.uint64(32)).astype(np.int64)
        return out[:, 0] if size is None else out

    def permutations(self, n: int, take: int) -> np.ndarray:
        """The first ``take`` entries of a uniform random permutation of ``range(n)``: [N, take]."""
        return np.argsort(self.raw(n), axis=1, kind="stable")[:, :take].astype(np.int64)


def _gather(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[r, index[r, j]]`` with the index clipped into range (callers mask the rest)."""
    return np.take_along_axis(values, np.clip(index, 0, values.shape[1] - 1), axis=1)


def _positive(f: dict, *names: str) -> None:
    for name in names:
        if not isinstance(f[name], int) or f[name] < 1:
            raise ConfigError(f"data.{name} must be a positive integer, got {f[name]!r}")


def _ordered(f: dict, low: str, high: str) -> None:
    _positive(f, low, high)
    if f[low] > f[high]:
        raise ConfigError(f"data.{low} ({f[low]}) must not exceed data.{high} ({f[high]})")


def _length(draws: Draws, f: dict, low: str, high: str) -> np.ndarray:
    return f[low] + draws.integers(f[high] - f[low] + 1)


class Task:
    """One synthetic task: its fields, alphabet, longest episode and episode generator.

    ``generate`` returns N episodes as ``tokens`` int32 [N, T] and ``answer`` bool [N, T]
    with ``T = max_len(f)``: each episode left-aligned, then ``<pad>``.
    """

    name = ""
    defaults: dict[str, Any] = {}
    teacher_forcing = False  # default of the data.teacher_forcing field
    alphabet_fields: tuple[str, ...] = ()

    def num_data(self, f: dict) -> int:
        raise NotImplementedError

    def num_counts(self, f: dict) -> int:
        return 0

    def answer_symbols(self, f: dict) -> int:
        """How many symbols an answer is drawn from, uniformly: chance accuracy is 1 / this."""
        return self.num_data(f)

    def bits(self, f: dict) -> int:
        return 0

    def max_len(self, f: dict) -> int:
        raise NotImplementedError

    def validate(self, f: dict) -> None:
        raise NotImplementedError

    def generate(self, draws: Draws, f: dict, lay: Layout) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def data_name(self, token: int, f: dict) -> str:
        return str(token)

    def _empty(self, draws: Draws, f: dict, lay: Layout) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
        tokens = np.full((draws.n, self.max_len(f)), lay.pad, dtype=np.int64)
        answer = np.zeros(tokens.shape, dtype=bool)
        pos = np.arange(tokens.shape[1])[None, :]
        return tokens, answer, pos


class Copy(Task):
    name = "copy"
    defaults = {"bits": 8, "min_len": 1, "max_len": 20}
    alphabet_fields = ("bits",)

    def num_data(self, f):
        return 2 ** f["bits"]

    def bits(self, f):
        return f["bits"]

    def max_len(self, f):
        return 2 * f["max_len"] + 1

    def validate(self, f):
        _ordered(f, "min_len", "max_len")
        _positive(f, "bits")
        if f["bits"] > 16:
            raise ConfigError(f"data.bits must be <= 16, got {f['bits']}")

    def generate(self, draws, f, lay):
        tokens, answer, pos = self._empty(draws, f, lay)
        length = _length(draws, f, "min_len", "max_len")[:, None]
        x = draws.integers(2 ** f["bits"], f["max_len"])
        out = (pos > length) & (pos <= 2 * length)
        tokens = np.where(pos < length, _gather(x, pos), tokens)
        tokens = np.where(pos == length, lay.sep, tokens)
        tokens = np.where(out, _gather(x, pos - length - 1), tokens)
        return tokens.astype(np.int32), answer | out


class RepeatCopy(Task):
    name = "repeat_copy"
    defaults = {"bits": 8, "min_len": 1, "max_len": 10, "min_repeats": 1, "max_repeats": 10}
    alphabet_fields = ("bits",)

    def num_data(self, f):
        return 2 ** f["bits"]

    def num_counts(self, f):
        return f["max_repeats"]

    def bits(self, f):
        return f["bits"]

    def max_len(self, f):
        return f["max_len"] * (1 + f["max_repeats"]) + 2

    def validate(self, f):
        Copy.validate(self, f)
        _ordered(f, "min_repeats", "max_repeats")

    def generate(self, draws, f, lay):
        tokens, answer, pos = self._empty(draws, f, lay)
        length = _length(draws, f, "min_len", "max_len")[:, None]
        repeats = _length(draws, f, "min_repeats", "max_repeats")[:, None]
        x = draws.integers(2 ** f["bits"], f["max_len"])
        stop = length + repeats * length  # last position of the repeated output
        out = (pos > length) & (pos <= stop)
        tokens = np.where(pos < length, _gather(x, pos), tokens)
        tokens = np.where(pos == length, lay.count(1) + repeats - 1, tokens)
        tokens = np.where(out, _gather(x, (pos - length - 1) % length), tokens)
        tokens = np.where(pos == stop + 1, lay.end, tokens)
        return tokens.astype(np.int32), answer | out | (pos == stop + 1)


class AssociativeRecall(Task):
    name = "associative_recall"
    defaults = {"bits": 6, "item_len": 3, "min_items": 2, "max_items": 6}
    alphabet_fields = ("bits", "item_len")

    def num_data(self, f):
        return 2 ** f["bits"]

    def bits(self, f):
        return f["bits"]

    def max_len(self, f):
        return (f["max_items"] + 2) * (f["item_len"] + 1)

    def validate(self, f):
        _positive(f, "bits", "item_len")
        _ordered(f, "min_items", "max_items")
        if f["bits"] > 16:
            raise ConfigError(f"data.bits must be <= 16, got {f['bits']}")
        if f["min_items"] < 2:
            raise ConfigError("data.min_items must be >= 2 (the answer is the item after the "
                              "query)")
        if f["bits"] * f["item_len"] > 62:
            raise ConfigError("data.bits * data.item_len must be <= 62")
        if 2 ** (f["bits"] * f["item_len"]) < 4 * f["max_items"]:
            raise ConfigError("data.bits * data.item_len leaves too few distinct items for "
                              "data.max_items")

    def generate(self, draws, f, lay):
        tokens, answer, pos = self._empty(draws, f, lay)
        k_max, width = f["max_items"], f["item_len"]
        count = _length(draws, f, "min_items", "max_items")
        query = draws.integers(count - 1)  # 0-based index of the query item; answer: +1
        items = self._distinct_items(draws, f, count)
        block, offset = pos // (width + 1), pos % (width + 1)
        count, query = count[:, None], query[:, None]
        which = np.where(block < count, block, np.where(block == count, query, query + 1))
        rows = np.arange(draws.n)[:, None]
        symbol = items[rows, np.clip(which, 0, k_max - 1), np.clip(offset - 1, 0, width - 1)]
        marker = np.where(block < count, lay.sep, lay.query)
        inside = block <= count + 1
        tokens = np.where(inside, np.where(offset == 0, marker, symbol), tokens)
        return tokens.astype(np.int32), answer | ((block == count + 1) & (offset > 0))

    @staticmethod
    def _distinct_items(draws, f, count):
        """[N, max_items, item_len] whose first ``count`` items are distinct per row: rows
        with a repeat draw again (rejection; nothing is drawn after, so each row's result
        depends on its own key only)."""
        k_max, width, bits = f["max_items"], f["item_len"], f["bits"]
        weights = (2 ** bits) ** np.arange(width, dtype=np.int64)
        items = draws.integers(2**bits, k_max * width).reshape(-1, k_max, width)
        while True:
            codes = (items * weights).sum(-1)
            codes = np.where(np.arange(k_max)[None] < count[:, None], codes,
                             -1 - np.arange(k_max)[None])  # unused slots never collide
            codes = np.sort(codes, axis=1)
            bad = (codes[:, 1:] == codes[:, :-1]).any(axis=1)
            if not bad.any():
                return items
            fresh = draws.integers(2**bits, k_max * width).reshape(-1, k_max, width)
            items = np.where(bad[:, None, None], fresh, items)


class Reverse(Task):
    name = "reverse"
    defaults = {"num_symbols": 10, "min_len": 24, "max_len": 24}
    teacher_forcing = True
    alphabet_fields = ("num_symbols",)

    def num_data(self, f):
        return f["num_symbols"]

    def max_len(self, f):
        return 2 * f["max_len"] + 1

    def validate(self, f):
        _positive(f, "num_symbols")
        _ordered(f, "min_len", "max_len")

    def generate(self, draws, f, lay):
        tokens, answer, pos = self._empty(draws, f, lay)
        length = _length(draws, f, "min_len", "max_len")[:, None]
        x = draws.integers(f["num_symbols"], f["max_len"])
        out = (pos > length) & (pos <= 2 * length)
        tokens = np.where(pos < length, _gather(x, pos), tokens)
        tokens = np.where(pos == length, lay.sep, tokens)
        tokens = np.where(out, _gather(x, 2 * length - pos), tokens)
        return tokens.astype(np.int32), answer | out


class AssociativeRetrieval(Task):
    name = "associative_retrieval"
    defaults = {"num_pairs": 4, "num_keys": 26, "num_values": 10}
    alphabet_fields = ("num_keys", "num_values")

    def num_data(self, f):
        return f["num_values"] + f["num_keys"]

    def answer_symbols(self, f):
        return f["num_values"]

    def max_len(self, f):
        return 2 * f["num_pairs"] + 3

    def validate(self, f):
        _positive(f, "num_pairs", "num_keys", "num_values")
        if f["num_pairs"] > f["num_keys"]:
            raise ConfigError(f"data.num_pairs ({f['num_pairs']}) exceeds data.num_keys "
                              f"({f['num_keys']}); keys must be distinct")

    def generate(self, draws, f, lay):
        k, nv = f["num_pairs"], f["num_values"]
        keys = nv + draws.permutations(f["num_keys"], k)
        values = draws.permutations(nv, k) if k <= nv else draws.integers(nv, k)
        query = draws.integers(k)[:, None]
        rows = np.arange(draws.n)[:, None]
        tokens = np.concatenate([
            np.stack([keys, values], axis=2).reshape(draws.n, 2 * k),
            keys[rows, query], np.full((draws.n, 1), lay.query), values[rows, query]], axis=1)
        answer = np.zeros(tokens.shape, dtype=bool)
        answer[:, -1] = True
        return tokens.astype(np.int32), answer

    def data_name(self, token, f):
        nv = f["num_values"]
        if token < nv:
            return str(token)
        key = token - nv
        return chr(ord("a") + key) if f["num_keys"] <= 26 else f"k{key}"


class DelayedRecall(Task):
    name = "delayed_recall"
    defaults = {"num_symbols": 16, "distance": 32, "min_distance": -1}
    alphabet_fields = ("num_symbols",)

    def num_data(self, f):
        return f["num_symbols"]

    def max_len(self, f):
        return f["distance"] + 4

    def validate(self, f):
        _positive(f, "num_symbols")
        if not isinstance(f["distance"], int) or f["distance"] < 0:
            raise ConfigError(f"data.distance must be an integer >= 0, got {f['distance']!r}")
        low = f["min_distance"]
        if not isinstance(low, int) or not -1 <= low <= f["distance"]:
            raise ConfigError(f"data.min_distance must be -1 (= distance) or an integer in "
                              f"0..distance ({f['distance']}), got {low!r}")

    def generate(self, draws, f, lay):
        value = draws.integers(f["num_symbols"])[:, None]
        distractors = draws.integers(f["num_symbols"], f["distance"])
        n = draws.n
        low = f["min_distance"]
        if low < 0 or low == f["distance"]:  # one distance: D distractors
            tokens = np.concatenate([np.full((n, 1), lay.mark), value, distractors,
                                     np.full((n, 1), lay.query), value], axis=1)
            answer = np.zeros(tokens.shape, dtype=bool)
            answer[:, -1] = True
            return tokens.astype(np.int32), answer
        # D uniform in [min_distance, distance]: the first D distractors, then query, value, pad
        d = (low + draws.integers(f["distance"] - low + 1))[:, None]
        col = np.arange(f["distance"] + 4)[None, :]
        tokens = np.full((n, col.shape[1]), lay.pad, dtype=np.int64)
        tokens[:, :1] = lay.mark
        tokens[:, 1:2] = value
        body = np.concatenate([distractors, np.zeros((n, 2), np.int64)], axis=1)
        tokens[:, 2:] = np.where(col[:, 2:] < d + 2, body, tokens[:, 2:])
        tokens = np.where(col == d + 2, lay.query, tokens)
        tokens = np.where(col == d + 3, value, tokens)
        return tokens.astype(np.int32), col == d + 3


TASKS: dict[str, Task] = {t.name: t for t in (Copy(), RepeatCopy(), AssociativeRecall(),
                                              Reverse(), AssociativeRetrieval(), DelayedRecall())}
COMMON_FIELDS = ("name", "task", "mode", "teacher_forcing", "eval_windows", "eval_overrides")


def task(name: str) -> Task:
    if name not in TASKS:
        close = difflib.get_close_matches(str(name), list(TASKS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown synthetic task '{name}'{hint} (tasks: {', '.join(TASKS)})")
    return TASKS[name]


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where} has no field '{key}'{hint}")


class SyntheticDataset(Dataset):
    """A synthetic task served in episodic or stream mode (module docstring)."""

    def __init__(self, task_name: str, fields: dict, *, mode: str = "episodic",
                 teacher_forcing: bool | None = None, eval_windows: int = 8,
                 eval_overrides: dict | None = None, seed: int = 0):
        self.task = task(task_name)
        known = list(self.task.defaults)
        for key in fields:
            if key not in self.task.defaults:
                raise _unknown(key, known + list(COMMON_FIELDS), f"synthetic task '{task_name}'")
        self.fields = {**self.task.defaults, **fields}
        self.task.validate(self.fields)
        eval_overrides = dict(eval_overrides or {})
        for key in eval_overrides:
            if key not in self.task.defaults:
                raise _unknown(key, known, f"data.eval_overrides of task '{task_name}'")
            if key in self.task.alphabet_fields:
                raise ConfigError(f"data.eval_overrides.{key} would change the alphabet of "
                                  f"'{task_name}'; only lengths and counts can differ at eval")
        self.eval_fields = {**self.fields, **eval_overrides}
        self.task.validate(self.eval_fields)
        if mode not in ("episodic", "stream"):
            raise ConfigError(f"data.mode '{mode}' unknown; use episodic or stream")
        if not isinstance(eval_windows, int) or eval_windows < 1:
            raise ConfigError(f"data.eval_windows must be a positive integer, got "
                              f"{eval_windows!r}")
        self.mode = mode
        self.teacher_forcing = (self.task.teacher_forcing if teacher_forcing is None
                                else bool(teacher_forcing))
        self.num_eval = eval_windows
        self.seed = int(seed) % 2**32
        self.layout = Layout(self.task.num_data(self.fields),
                             max(self.task.num_counts(self.fields),
                                 self.task.num_counts(self.eval_fields)))
        self.vocab_size = self.layout.vocab_size
        self.unit = "token"
        self.bits_per_symbol = self.task.bits(self.fields)
        self.episodic = True

    # -- episodes ---------------------------------------------------------------------------
    def episodes(self, split: str, index, stream) -> tuple[np.ndarray, np.ndarray]:
        """Episodes keyed by (seed, split, index, stream), padded to the longest:
        ``tokens`` int32 [N, T] and ``answer`` bool [N, T] for ``index``, ``stream`` int [N].

        ``index`` is the window index in episodic mode and the slot index in stream mode.
        """
        check_split(split)
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        stream = np.atleast_1d(np.asarray(stream, dtype=np.int64))
        index, stream = np.broadcast_arrays(index, stream)
        draws = Draws(self.seed, SPLIT_TAGS[split], index, stream)
        fields = self.fields if split == "train" else self.eval_fields
        return self.task.generate(draws, fields, self.layout)

    @property
    def chance_accuracy(self) -> float:
        """Accuracy of a uniform guess among the symbols an answer is drawn from."""
        return 1.0 / self.task.answer_symbols(self.fields)

    def max_episode_len(self, split: str = "train") -> int:
        return self.task.max_len(self.fields if split == "train" else self.eval_fields)

    def check_layout(self, batch_size: int, window_len: int, split: str = "train") -> None:
        check_split(split)
        if batch_size < 1 or window_len < 1:
            raise DataError(f"batch_size and window_len must be >= 1, got {batch_size}, "
                            f"{window_len}")
        longest = self.max_episode_len(split)
        if self.mode == "episodic" and longest > window_len + 1:
            window = ("train.segment_len * train.bptt_segments" if split == "train" else
                      "(eval.segment_len or train.segment_len) * train.bptt_segments")
            raise DataError(
                f"'{self.task.name}' {split} episodes reach {longest} tokens but "
                f"data.mode=episodic puts one whole episode in each window, and a window of "
                f"{window_len} steps holds {window_len + 1} tokens (inputs plus the last "
                f"target); make the window ({window}) at least {longest - 1}, or set "
                f"data.mode=stream to run episodes back to back across windows")

    # -- windows ----------------------------------------------------------------------------
    def _window(self, split: str, index: int, batch_size: int, window_len: int
                ) -> dict[str, np.ndarray]:
        self.check_layout(batch_size, window_len, split)
        if self.mode == "episodic":
            rows, answer, ids = self._episodic_rows(split, index, batch_size, window_len)
            reset = np.ones((batch_size,), dtype=bool)
        else:
            rows, answer, ids = self._stream_rows(split, index, batch_size, window_len)
            reset = np.full((batch_size,), index == 0, dtype=bool)
        inputs = rows[:, :-1].copy()
        if not self.teacher_forcing:
            inputs[answer[:, :-1]] = self.layout.blank
        return {
            "inputs": inputs,
            "targets": rows[:, 1:].copy(),
            "mask": answer[:, 1:].astype(np.float32),
            "reset": reset,
            "episode": ids[:, 1:].copy(),
        }

    def _episodic_rows(self, split, index, batch_size, window_len):
        tokens, answer = self.episodes(split, index, np.arange(batch_size))
        pad = window_len + 1 - tokens.shape[1]
        ids = np.where(tokens != self.layout.pad, index % ID_WRAP, -1).astype(np.int32)
        rows = np.pad(tokens, ((0, 0), (0, pad)), constant_values=self.layout.pad)
        return rows, np.pad(answer, ((0, 0), (0, pad))), np.pad(ids, ((0, 0), (0, pad)),
                                                                 constant_values=-1)

    def _stream_rows(self, split, index, batch_size, window_len):
        slot = self.max_episode_len(split)
        start = index * window_len
        stop = start + window_len + 1
        first, last = start // slot, (stop - 1) // slot
        slots = np.arange(first, last + 1, dtype=np.int64)
        streams = np.arange(batch_size, dtype=np.int64)
        tokens, answer = self.episodes(split, slots[None, :].repeat(batch_size, 0).ravel(),
                                       streams[:, None].repeat(len(slots), 1).ravel())
        slot_ids = np.broadcast_to((slots % ID_WRAP)[None, :, None],
                                   (batch_size, len(slots), slot)).reshape(batch_size, -1)
        tokens = tokens.reshape(batch_size, -1)
        answer = answer.reshape(batch_size, -1)
        ids = np.where(tokens != self.layout.pad, slot_ids, -1).astype(np.int32)
        cut = slice(start - first * slot, stop - first * slot)
        return tokens[:, cut], answer[:, cut], ids[:, cut]

    def train_window(self, step: int, batch_size: int, window_len: int) -> dict[str, np.ndarray]:
        return self._window("train", int(step), batch_size, window_len)

    def num_eval_windows(self, split: str, batch_size: int, window_len: int) -> int:
        check_split(split)
        return self.num_eval

    def eval_windows(self, split: str, batch_size: int, window_len: int,
                     max_windows: int = 0) -> Iterator[dict[str, np.ndarray]]:
        check_split(split)
        count = self.num_eval if max_windows <= 0 else min(self.num_eval, max_windows)
        self.check_layout(batch_size, window_len, split)
        for index in range(count):
            yield self._window(split, index, batch_size, window_len)

    # -- text -------------------------------------------------------------------------------
    def token_name(self, token: int) -> str:
        lay = self.layout
        if 0 <= token < lay.num_data:
            return self.task.data_name(token, self.fields)
        if lay.num_data <= token < lay.num_data + len(SPECIALS):
            return f"<{SPECIALS[token - lay.num_data]}>"
        if token < lay.vocab_size:
            return f"<x{token - lay.num_data - len(SPECIALS) + 1}>"
        raise DataError(f"token {token} is outside the vocabulary of {lay.vocab_size}")

    def decode(self, ids) -> str:
        """Tokens as space-separated names: data symbols, ``<sep>``-style specials, ``<xN>``."""
        return " ".join(self.token_name(int(t)) for t in np.asarray(ids).ravel())

    def encode(self, text: str) -> np.ndarray:
        """The inverse of :meth:`decode`."""
        names = {self.token_name(i): i for i in range(self.vocab_size)}
        out = []
        for word in text.split():
            if word not in names:
                raise DataError(f"'{word}' is not a token of task '{self.task.name}'")
            out.append(names[word])
        return np.asarray(out, dtype=np.int32)
