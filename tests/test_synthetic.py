"""Synthetic tasks: determinism, masks exactly on the answers, answers checked semantically by
an independent parser per task, episodic and stream modes, evaluation windows."""

from __future__ import annotations

import numpy as np
import pytest

from recurrentlab.data import TASKS, build_dataset, data_config
from recurrentlab.errors import ConfigError, DataError

TASK_NAMES = sorted(TASKS)


def _dataset(task, mode="episodic", seed=0, **fields):
    return build_dataset(data_config("synthetic", task=task, mode=mode, **fields), seed=seed)


# -- independent parsers: given one episode's tokens, return the answer positions -------------
def _parse_copy(seq, ds):
    lay, f = ds.layout, ds.fields
    sep = seq.index(lay.sep)
    x = seq[:sep]
    assert f["min_len"] <= sep <= f["max_len"]
    assert all(0 <= v < 2 ** f["bits"] for v in x)
    assert seq[sep + 1:] == x, "the reproduction is the input sequence"
    return set(range(sep + 1, 2 * sep + 1))


def _parse_repeat_copy(seq, ds):
    lay, f = ds.layout, ds.fields
    at = next(i for i, v in enumerate(seq) if v >= lay.count(1))
    repeats = seq[at] - lay.count(1) + 1
    x = seq[:at]
    assert f["min_len"] <= len(x) <= f["max_len"] and f["min_repeats"] <= repeats
    assert repeats <= f["max_repeats"]
    assert seq[at + 1:] == x * repeats + [lay.end]
    return set(range(at + 1, len(seq)))


def _parse_associative_recall(seq, ds):
    lay, f = ds.layout, ds.fields
    width = f["item_len"] + 1
    assert len(seq) % width == 0
    blocks = [seq[i:i + width] for i in range(0, len(seq), width)]
    items = [tuple(b[1:]) for b in blocks if b[0] == lay.sep]
    assert [b[0] for b in blocks] == [lay.sep] * len(items) + [lay.query, lay.query]
    assert f["min_items"] <= len(items) <= f["max_items"]
    assert len(set(items)) == len(items)
    query, answer = tuple(blocks[-2][1:]), tuple(blocks[-1][1:])
    index = items.index(query)
    assert index < len(items) - 1 and answer == items[index + 1]
    return set(range(len(seq) - f["item_len"], len(seq)))


def _parse_reverse(seq, ds):
    lay, f = ds.layout, ds.fields
    sep = seq.index(lay.sep)
    x = seq[:sep]
    assert f["min_len"] <= sep <= f["max_len"]
    assert all(0 <= v < f["num_symbols"] for v in x)
    assert seq[sep + 1:] == x[::-1]
    return set(range(sep + 1, 2 * sep + 1))


def _parse_associative_retrieval(seq, ds):
    lay, f = ds.layout, ds.fields
    k, nv = f["num_pairs"], f["num_values"]
    assert len(seq) == 2 * k + 3 and seq[-2] == lay.query
    keys, values = seq[0:2 * k:2], seq[1:2 * k:2]
    assert all(nv <= key < nv + f["num_keys"] for key in keys) and len(set(keys)) == k
    assert all(0 <= v < nv for v in values)
    if k <= nv:
        assert len(set(values)) == k
    assert seq[-1] == dict(zip(keys, values, strict=True))[seq[-3]]
    return {len(seq) - 1}


def _parse_delayed_recall(seq, ds):
    lay, f = ds.layout, ds.fields
    assert len(seq) == f["distance"] + 4
    assert seq[0] == lay.mark and seq[-2] == lay.query and seq[-1] == seq[1]
    assert all(0 <= v < f["num_symbols"] for v in seq[1:-2])
    return {len(seq) - 1}


PARSERS = {
    "copy": _parse_copy,
    "repeat_copy": _parse_repeat_copy,
    "associative_recall": _parse_associative_recall,
    "reverse": _parse_reverse,
    "associative_retrieval": _parse_associative_retrieval,
    "delayed_recall": _parse_delayed_recall,
}


def _check_sequence(row_tokens, row_answer, ds):
    """Split one row's full token sequence into padded episodes, parse each, and compare the
    parser's answer positions with the dataset's mask. Returns the number of episodes."""
    pad = ds.layout.pad
    episodes, start = 0, 0
    tokens = list(map(int, row_tokens))
    while start < len(tokens):
        if tokens[start] == pad:
            assert not row_answer[start]
            start += 1
            continue
        stop = start
        while stop < len(tokens) and tokens[stop] != pad:
            stop += 1
        expected = PARSERS[ds.task.name](tokens[start:stop], ds)
        got = {i - start for i in range(start, stop) if row_answer[i]}
        assert got == expected
        episodes += 1
        start = stop
    return episodes


def _full_rows(window):
    """Token sequences [b, w + 1] behind a window: first input, then the targets."""
    return np.concatenate([window["inputs"][:, :1], window["targets"]], axis=1)


# -- tests --------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASK_NAMES)
def test_episodic_answers_and_masks(task):
    ds = _dataset(task)
    width = ds.max_episode_len() + 3
    for step in (0, 1, 17):
        w = ds.train_window(step, 6, width)
        assert w["reset"].all()
        rows = _full_rows(w)
        answer = np.concatenate([np.zeros((6, 1), bool), w["mask"] > 0], axis=1)
        for b in range(6):
            assert rows[b, 0] != ds.layout.pad
            assert _check_sequence(rows[b], answer[b], ds) == 1
            # Episode ids: the window index on the episode's targets, -1 on padding.
            inside = rows[b, 1:] != ds.layout.pad
            assert (w["episode"][b][inside] == step).all()
            assert (w["episode"][b][~inside] == -1).all()
        assert w["inputs"].max() < ds.vocab_size and w["targets"].max() < ds.vocab_size


@pytest.mark.parametrize("task", TASK_NAMES)
def test_stream_mode(task):
    ds = _dataset(task, mode="stream")
    slot = ds.max_episode_len()
    width, batch, steps = 23, 3, 3 * slot // 23 + 2
    windows = [ds.train_window(t, batch, width) for t in range(steps)]
    assert [bool(w["reset"].any()) for w in windows] == [True] + [False] * (steps - 1)
    assert all(w["reset"].all() for w in windows[:1])
    for t in range(steps - 1):  # one stream, cut into consecutive windows
        last, was_answer = windows[t]["targets"][:, -1], windows[t]["mask"][:, -1] > 0
        expected = np.where(was_answer & ~ds.teacher_forcing, ds.layout.blank, last)
        np.testing.assert_array_equal(windows[t + 1]["inputs"][:, 0], expected)
    rows = np.concatenate([windows[0]["inputs"][:, :1]] + [w["targets"] for w in windows], 1)
    answer = np.concatenate([np.zeros((batch, 1), bool)] + [w["mask"] > 0 for w in windows], 1)
    ids = np.concatenate([np.full((batch, 1), 0)] + [w["episode"] for w in windows], 1)
    whole = (rows.shape[1] // slot) * slot
    for b in range(batch):
        # Slot s holds episode s: ids are p // slot_len inside episodes, -1 on padding.
        slot_of = np.arange(whole) // slot
        inside = rows[b, :whole] != ds.layout.pad
        np.testing.assert_array_equal(ids[b, :whole][inside], slot_of[inside])
        assert (ids[b, :whole][~inside] == -1).all()
        for s in range(whole // slot):
            part = slice(s * slot, (s + 1) * slot)
            assert _check_sequence(rows[b, part], answer[b, part], ds) == 1
            assert rows[b, s * slot] != ds.layout.pad  # each episode starts its slot


@pytest.mark.parametrize("task", TASK_NAMES)
def test_deterministic_and_independent_rows(task):
    for mode in ("episodic", "stream"):
        a, b = _dataset(task, mode, seed=3), _dataset(task, mode, seed=3)
        width = ds_width = a.max_episode_len() + 1
        w1 = a.train_window(5, 4, width)
        _ = a.train_window(2, 4, width)  # no state: other calls change nothing
        w2 = b.train_window(5, 4, ds_width)
        for key in w1:
            np.testing.assert_array_equal(w1[key], w2[key])
        # Row b of a window does not depend on the batch size.
        wide = a.train_window(5, 7, width)
        for key in ("inputs", "targets", "mask", "episode"):
            np.testing.assert_array_equal(wide[key][:4], w1[key])
        other_step = a.train_window(6, 4, width)
        other_seed = _dataset(task, mode, seed=4).train_window(5, 4, width)
        assert not np.array_equal(other_step["targets"], w1["targets"])
        assert not np.array_equal(other_seed["targets"], w1["targets"])
        assert not np.array_equal(w1["targets"][0], w1["targets"][1])  # streams differ


@pytest.mark.parametrize("task", TASK_NAMES)
def test_teacher_forcing(task):
    for forcing in (False, True):
        ds = _dataset(task, teacher_forcing=forcing)
        w = ds.train_window(0, 8, ds.max_episode_len() + 1)
        fed = w["inputs"][:, 1:]  # the token fed right after each target
        answers = w["mask"][:, :-1] > 0
        if forcing:
            np.testing.assert_array_equal(fed, w["targets"][:, :-1])
        else:
            assert (fed[answers] == ds.layout.blank).all()
            np.testing.assert_array_equal(fed[~answers], w["targets"][:, :-1][~answers])
    assert _dataset("reverse").teacher_forcing and not _dataset("copy").teacher_forcing


def test_lengths_cover_their_ranges():
    ds = _dataset("copy", min_len=3, max_len=9)
    tokens, _ = ds.episodes("train", np.arange(600), 0)
    lengths = (tokens == ds.layout.sep).argmax(axis=1)
    assert set(lengths.tolist()) == set(range(3, 10))
    ds = _dataset("repeat_copy", max_len=4, max_repeats=5)
    tokens, _ = ds.episodes("train", 0, np.arange(600))
    counts = tokens[(tokens >= ds.layout.count(1))] - ds.layout.count(1) + 1
    assert set(counts.tolist()) == set(range(1, 6))
    ds = _dataset("associative_recall")
    tokens, _ = ds.episodes("train", np.arange(300), 1)
    assert set(((tokens == ds.layout.sep).sum(axis=1)).tolist()) == set(range(2, 7))
    ds = _dataset("delayed_recall", num_symbols=5, distance=3)
    tokens, _ = ds.episodes("train", np.arange(400), 2)
    assert set(tokens[:, 1].tolist()) == set(range(5))
    assert np.bincount(tokens[:, 2:5].ravel(), minlength=5).min() > 150  # ~240 each


def test_bits_vocab_and_text():
    assert _dataset("copy").bits_per_symbol == 8 and _dataset("copy").vocab_size == 256 + 6
    assert _dataset("associative_recall").bits_per_symbol == 6
    assert _dataset("repeat_copy").vocab_size == 256 + 6 + 10
    assert _dataset("reverse").bits_per_symbol == 0 and _dataset("reverse").unit == "token"
    ds = _dataset("associative_retrieval")
    assert ds.vocab_size == 10 + 26 + 6
    w = ds.train_window(0, 1, ds.max_episode_len() - 1)  # rows hold exactly one episode
    text = ds.decode(_full_rows(w)[0])
    np.testing.assert_array_equal(ds.encode(text), _full_rows(w)[0])
    assert text.split()[-2] == "<query>" and text.split()[0].isalpha()
    with pytest.raises(DataError):
        ds.encode("a 1 <nonsense>")


def test_episode_longer_than_window():
    ds = _dataset("copy", max_len=20)  # episodes up to 41 tokens
    ds.check_layout(4, 40)
    with pytest.raises(DataError, match="reach 41 tokens.*data.mode=stream"):
        ds.check_layout(4, 39)
    with pytest.raises(DataError):
        ds.train_window(0, 4, 39)
    _dataset("copy", mode="stream").train_window(0, 4, 7)  # episodes span windows


@pytest.mark.parametrize("mode", ["episodic", "stream"])
def test_eval_windows(mode):
    ds = _dataset("copy", mode, eval_windows=5, eval_overrides={"min_len": 30, "max_len": 40})
    assert ds.vocab_size == _dataset("copy").vocab_size
    width = 81 if mode == "episodic" else 32
    first = list(ds.eval_windows("valid", 3, width))
    second = list(ds.eval_windows("valid", 3, width))
    assert len(first) == 5 == ds.num_eval_windows("valid", 3, width)
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert len(list(ds.eval_windows("valid", 3, width, max_windows=2))) == 2
    test = next(ds.eval_windows("test", 3, width))
    assert not np.array_equal(test["targets"], first[0]["targets"])
    train = ds.train_window(0, 3, width)
    assert not np.array_equal(train["targets"], first[0]["targets"])
    # The eval fields apply: every valid episode has 30..40 symbols.
    rows = np.concatenate([first[0]["inputs"][:, :1]] + [w["targets"] for w in first], axis=1)
    slot = ds.max_episode_len("valid")
    assert slot == 81
    starts = range(0, rows.shape[1] - slot + 1, slot) if mode == "stream" else [0]
    lengths = [int(np.argmax(row[i:i + slot] == ds.layout.sep)) for row in rows for i in starts]
    assert lengths and all(30 <= n <= 40 for n in lengths)
    assert [bool(w["reset"].all()) for w in first] == (
        [True] * 5 if mode == "episodic" else [True] + [False] * 4)
    if mode == "episodic":
        with pytest.raises(DataError, match="valid episodes reach 81"):
            next(ds.eval_windows("valid", 3, 41))
        ds.check_layout(3, 41)  # the training episodes still fit


def test_eval_overrides_validation():
    with pytest.raises(ConfigError, match="alphabet"):
        _dataset("copy", eval_overrides={"bits": 4})
    with pytest.raises(ConfigError, match="must not exceed"):
        _dataset("copy", eval_overrides={"min_len": 50})
    ds = _dataset("repeat_copy", eval_overrides={"max_repeats": 20})
    assert ds.vocab_size == 256 + 6 + 20  # room for the larger eval count
    ds = _dataset("delayed_recall", distance=4, eval_overrides={"distance": 50})
    assert ds.max_episode_len("train") == 8 and ds.max_episode_len("valid") == 54
    with pytest.raises(ConfigError, match="data.mode"):
        _dataset("copy", mode="streaming")
