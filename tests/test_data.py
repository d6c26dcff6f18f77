"""Corpora, the stream layout, data configs and the metric helpers of recurrentlab.data."""

from __future__ import annotations

import hashlib
import os

import ml_collections
import numpy as np
import pytest

from recurrentlab.data import (
    Dataset,
    bit_errors,
    build_dataset,
    corpora,
    data_config,
    episode_sums,
    episodes_exact_match,
)
from recurrentlab.errors import ConfigError, DataError

M = 1_000_000


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def _random_text(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


# -- enwik8 / text8: exact sizes on sparse files ------------------------------------------------
@pytest.fixture(scope="module")
def fake_enwik8(tmp_path_factory):
    """A sparse 100,000,000-byte file with marker bytes at the split boundaries."""
    path = tmp_path_factory.mktemp("enwik8") / "enwik8"
    markers = {0: 1, 90 * M - 1: 2, 90 * M: 3, 92_500_000: 4, 95 * M - 1: 5, 95 * M: 6,
               100 * M - 1: 7}
    with open(path, "wb") as f:
        f.truncate(100 * M)
        for pos, value in markers.items():
            f.seek(pos)
            f.write(bytes([value]))
    return path, markers


def test_enwik8_split_arithmetic(fake_enwik8):
    path, markers = fake_enwik8
    ds = build_dataset(data_config("enwik8", path=str(path), verify_checksum=False), seed=0)
    assert isinstance(ds, Dataset)
    assert (ds.vocab_size, ds.unit, ds.bits_per_symbol) == (256, "byte", 0)
    assert [ds.split_len(s) for s in ("train", "valid", "test")] == [90 * M, 5 * M, 5 * M]
    assert all(isinstance(m, np.memmap) for m in ds.splits["train"].source.maps)
    train, valid, test = (ds.splits[s] for s in ("train", "valid", "test"))
    assert train.read(0, 1)[0] == markers[0]
    assert train.read(90 * M - 1, 90 * M)[0] == markers[90 * M - 1]
    assert valid.read(0, 1)[0] == markers[90 * M]
    assert valid.read(5 * M - 1, 5 * M)[0] == markers[95 * M - 1]
    assert test.read(0, 1)[0] == markers[95 * M]
    assert test.read(5 * M - 1, 5 * M)[0] == markers[100 * M - 1]
    # Through the stream layout: valid with 2 streams; stream 1 starts at byte 92.5M.
    window = next(ds.eval_windows("valid", 2, 8))
    assert window["inputs"][0, 0] == markers[90 * M]
    assert window["inputs"][1, 0] == markers[92_500_000]
    assert window["targets"][1, 0] == 0
    window = next(ds.eval_windows("test", 1, 8))
    assert window["inputs"][0, 0] == markers[95 * M]
    assert ds.num_eval_windows("test", 1, 8) == -(-(5 * M - 1) // 8)


def test_enwik8_wrong_size_and_missing_file(tmp_path):
    short = tmp_path / "enwik8"
    with open(short, "wb") as f:
        f.truncate(100 * M - 1)
    with pytest.raises(DataError, match=r"99999999 bytes.*mattmahoney.net/dc/enwik8.zip"):
        build_dataset(data_config("enwik8", path=str(short), verify_checksum=False), seed=0)
    with pytest.raises(DataError, match=r"not found.*mattmahoney.net/dc/enwik8.zip.*unzip"):
        build_dataset(data_config("enwik8", path=str(tmp_path / "nope")), seed=0)


def test_enwik8_checksum_mismatch(fake_enwik8, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path, _ = fake_enwik8
    with pytest.raises(DataError, match="MD5"):
        build_dataset(data_config("enwik8", path=str(path)), seed=0)


def test_checksum_cached_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "corpus"
    path.write_bytes(b"hello world")
    good = hashlib.md5(b"hello world").hexdigest()
    corpora.verify_checksum(path, good, where="here")
    assert (tmp_path / "corpus.md5ok").is_file()
    stat = path.stat()
    # Same size and mtime: the cached result stands, the file is not hashed again.
    path.write_bytes(b"HELLO WORLD")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    corpora.verify_checksum(path, good, where="here")
    # A new mtime invalidates the cache: the changed content is caught.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="MD5.*download it again from here"):
        corpora.verify_checksum(path, good, where="here")


def test_text8_alphabet_and_size(tmp_path):
    path = tmp_path / "text8"
    with open(path, "wb") as f:
        f.truncate(100 * M)
        f.seek(90 * M)
        f.write(b" anarchism z")
    ds = build_dataset(data_config("text8", path=str(path)), seed=0)
    assert (ds.vocab_size, ds.unit) == (27, "char")
    window = next(ds.eval_windows("valid", 1, 11))
    assert ds.decode(window["inputs"][0]) == " anarchism "
    assert window["inputs"][0, 0] == 0 and window["inputs"][0, 1] == 1  # space, 'a'
    assert ds.decode(ds.encode("Zebra z")) == "zebra z"
    with pytest.raises(DataError, match="not in its alphabet"):
        ds.train_window(0, 1, 8)  # the sparse zeros are not text8
    with open(path, "r+b") as f:
        f.truncate(100 * M + 1)
    with pytest.raises(DataError, match="text8.zip"):
        build_dataset(data_config("text8", path=str(path)), seed=0)


# -- the stream layout --------------------------------------------------------------------------
def test_stream_layout(tmp_path):
    data = _random_text(10_000, seed=1)
    ds = build_dataset(data_config("text", path=_write(tmp_path / "c.txt", data)), seed=0)
    split = np.frombuffer(data[:9000], dtype=np.uint8)
    batch, width = 3, 50
    stream_len = 9000 // batch
    n = (stream_len - 1) // width
    assert ds.num_windows("train", batch, width) == n
    windows = [ds.train_window(t, batch, width) for t in range(n + 2)]
    for t, w in enumerate(windows):
        start = (t % n) * width
        for b in range(batch):
            stream = split[b * stream_len:(b + 1) * stream_len]
            np.testing.assert_array_equal(w["inputs"][b], stream[start:start + width])
            np.testing.assert_array_equal(w["targets"][b], stream[start + 1:start + width + 1])
        np.testing.assert_array_equal(w["targets"][:, :-1], w["inputs"][:, 1:])
        assert w["reset"].tolist() == [t % n == 0] * batch
        assert w["mask"].min() == 1.0 and (w["episode"] == -1).all()
        assert w["inputs"].dtype == np.int32 and w["mask"].dtype == np.float32
    # Contiguous streams: window t + 1 continues where window t stopped.
    for t in range(n - 1):
        np.testing.assert_array_equal(windows[t + 1]["inputs"][:, 0],
                                      windows[t]["targets"][:, -1])
    # A pure function of the step: out of order and repeated calls agree; epochs cycle.
    again = ds.train_window(n + 1, batch, width)
    for key in again:
        np.testing.assert_array_equal(again[key], windows[1][key])
        np.testing.assert_array_equal(ds.train_window(3, batch, width)[key], windows[3][key])


def test_eval_windows_cover_each_stream_once(tmp_path):
    data = _random_text(20_000, seed=2)
    ds = build_dataset(data_config("text", path=_write(tmp_path / "c.txt", data)), seed=0)
    valid = np.frombuffer(data[18_000:19_000], dtype=np.uint8)
    batch, width = 4, 32
    stream_len = len(valid) // batch  # 250: 249 targets per stream, the last window partial
    windows = list(ds.eval_windows("valid", batch, width))
    assert len(windows) == ds.num_eval_windows("valid", batch, width) == -(-249 // width)
    assert [bool(w["reset"][0]) for w in windows] == [True] + [False] * (len(windows) - 1)
    targets = np.concatenate([w["targets"] for w in windows], axis=1)
    inputs = np.concatenate([w["inputs"] for w in windows], axis=1)
    mask = np.concatenate([w["mask"] for w in windows], axis=1)
    assert mask.sum() == batch * (stream_len - 1)
    for b in range(batch):
        stream = valid[b * stream_len:(b + 1) * stream_len]
        np.testing.assert_array_equal(targets[b][mask[b] > 0], stream[1:])
        np.testing.assert_array_equal(inputs[b][mask[b] > 0], stream[:-1])
    assert len(list(ds.eval_windows("valid", batch, width, max_windows=3))) == 3
    again = list(ds.eval_windows("valid", batch, width))
    for a, b in zip(windows, again, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_batch_too_large(tmp_path):
    ds = build_dataset(data_config("text", path=_write(tmp_path / "c.txt", _random_text(2000))),
                       seed=0)
    ds.check_layout(8, 100)  # train: 1800 bytes >= 8 * 101
    with pytest.raises(DataError, match=r"split 'train' has 1800 bytes.*batch_size 32"):
        ds.check_layout(32, 100)
    with pytest.raises(DataError, match="split 'valid'"):
        ds.check_layout(2, 100, split="valid")  # 100 bytes
    with pytest.raises(DataError) as error:
        ds.train_window(0, 32, 100)
    assert "\n" not in str(error.value)
    with pytest.raises(DataError):
        next(ds.eval_windows("test", 1, 100))


# -- text files and folders ---------------------------------------------------------------------
def test_text_file_split_fractions(tmp_path):
    data = _random_text(12_345, seed=3)
    ds = build_dataset(data_config("text", path=_write(tmp_path / "c.txt", data)), seed=0)
    a, b = int(12_345 * 0.9), int(12_345 * 0.95)
    assert [ds.split_len(s) for s in ("train", "valid", "test")] == [a, b - a, 12_345 - b]
    assert ds.splits["valid"].read(0, 10).tobytes() == data[a:a + 10]
    assert ds.splits["test"].read(0, 12_345 - b).tobytes() == data[b:]


def test_text_folder_with_named_splits(tmp_path):
    parts = {s: _random_text(3000 + i, seed=i) for i, s in enumerate(("train", "valid", "test"))}
    for split, data in parts.items():
        _write(tmp_path / f"{split}.txt", data)
    _write(tmp_path / "notes.md", b"ignored")
    ds = build_dataset(data_config("text", path=str(tmp_path)), seed=0)
    for split, data in parts.items():
        assert ds.split_len(split) == len(data)
        assert ds.splits[split].read(0, len(data)).tobytes() == data
    (tmp_path / "test.txt").unlink()
    with pytest.raises(DataError, match="no test.txt"):
        build_dataset(data_config("text", path=str(tmp_path)), seed=0)


def test_text_folder_concatenates_sorted_files(tmp_path):
    files = {"b.txt": _random_text(700, 1), "a.txt": _random_text(500, 2),
             "c.txt": b"", "d.txt": _random_text(800, 3), ".hidden": b"xx"}
    for name, data in files.items():
        _write(tmp_path / name, data)
    whole = files["a.txt"] + files["b.txt"] + files["d.txt"]
    ds = build_dataset(data_config("text", path=str(tmp_path)), seed=0)
    n = len(whole)
    assert sum(ds.split_len(s) for s in ("train", "valid", "test")) == n
    # Reads that cross file boundaries (a|b at 500, b|d at 1200).
    source = ds.splits["train"].source
    for start, stop in [(0, n), (490, 510), (1195, 1300), (499, 1201)]:
        assert source.read(start, stop).tobytes() == whole[start:stop]
    w = ds.train_window(0, 2, 100)
    stream_len = int(n * 0.9) // 2
    assert bytes(w["inputs"][1].astype(np.uint8)) == whole[stream_len:stream_len + 100]


def test_text_errors(tmp_path):
    with pytest.raises(DataError, match="data.path is empty"):
        build_dataset(data_config("text"), seed=0)
    with pytest.raises(DataError, match="neither a file nor a folder"):
        build_dataset(data_config("text", path=str(tmp_path / "missing")), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files"):
        build_dataset(data_config("text", path=str(tmp_path / "empty")), seed=0)


def test_embedded_corpus():
    ds = build_dataset(data_config("embedded"), seed=0)
    size = corpora.EMBEDDED_PATH.stat().st_size
    assert sum(ds.split_len(s) for s in ("train", "valid", "test")) == size
    assert ds.split_len("train") == int(size * 0.9)
    w = ds.train_window(5, 8, 64)
    assert w["inputs"].shape == (8, 64) and w["inputs"].min() >= 0 and w["inputs"].max() < 256
    text = "Licensor — «quoted» text\n"
    assert ds.decode(ds.encode(text)) == text
    ds.check_layout(8, 128, split="valid")


# -- configs ------------------------------------------------------------------------------------
def test_data_config_fields_and_errors():
    c = data_config("enwik8", path="/data/enwik8")
    assert isinstance(c, ml_collections.ConfigDict)
    assert (c.name, c.path, c.verify_checksum) == ("enwik8", "/data/enwik8", True)
    with pytest.raises(ConfigError, match="did you mean 'path'"):
        data_config("enwik8", pth="x")
    with pytest.raises(ConfigError, match="did you mean 'enwik8'"):
        data_config("enwik9")
    with pytest.raises(ConfigError, match="no field 'task'"):
        data_config("text", task="copy")
    s = data_config("synthetic", task="delayed_recall", distance=7, mode="stream")
    assert (s.task, s.distance, s.mode, s.num_symbols) == ("delayed_recall", 7, "stream", 16)
    assert "max_len" not in s and len(s.eval_overrides) == 0
    with pytest.raises(ConfigError, match="did you mean 'distance'"):
        data_config("synthetic", task="delayed_recall", distanse=7)
    with pytest.raises(ConfigError, match="did you mean 'max_len'"):
        data_config("synthetic", task="copy", eval_overrides={"max_lne": 40})
    with pytest.raises(ConfigError, match="did you mean 'copy'"):
        data_config("synthetic", task="cpy")
    with pytest.raises(ConfigError, match="must not exceed"):
        data_config("synthetic", task="copy", min_len=5, max_len=4)
    # Switching the task of a built config leaves the old task's fields: caught with advice.
    s = data_config("synthetic", task="copy")
    s.task = "reverse"
    with pytest.raises(ConfigError, match=r"task 'reverse' has no field 'bits'.*task='reverse'"):
        build_dataset(s, seed=0)
    # A config read back (e.g. from config.json) with a stray key is caught at build time.
    c = data_config("text", path="x")
    c.unlocked = 1
    with pytest.raises(ConfigError, match="no field 'unlocked'"):
        build_dataset(c, seed=0)


# -- metric helpers -----------------------------------------------------------------------------
def test_episodes_exact_match():
    correct = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 0]], dtype=bool)
    mask = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=np.float32)
    episode = np.array([[0, 0, 1, 2, 2], [0, 0, 5, 5, -1]])
    # Row 0: ep 0 exact, ep 1 wrong, ep 2 exact; row 1: ep 0 exact, ep 5 exact (-1 ignored).
    assert episodes_exact_match(correct, mask, episode) == (4, 5)
    assert episodes_exact_match(correct, np.zeros_like(mask), episode) == (0, 0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        correct = rng.random((3, 12)) < 0.8
        mask = (rng.random((3, 12)) < 0.6).astype(np.float32)
        episode = rng.integers(-1, 4, size=(3, 12))
        groups = {}
        for b in range(3):
            for i in range(12):
                if mask[b, i] > 0 and episode[b, i] >= 0:
                    groups.setdefault((b, episode[b, i]), []).append(correct[b, i])
        expected = (sum(all(v) for v in groups.values()), len(groups))
        assert episodes_exact_match(correct, mask, episode) == expected


def test_episode_sums_group_by_row_and_id():
    mask = np.array([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=np.float32)
    episode = np.array([[3, 3, 7, 7, -1], [3, 3, 3, 0, 0]])
    values = np.array([[1, 2, 4, 8, 16], [32, 64, 128, 256, 512]])
    rows, ids, sums = episode_sums(mask, episode, values)
    # (row, id) order; masked-out and -1 positions count nowhere; equal ids of two rows apart
    assert rows.tolist() == [0, 0, 1, 1] and ids.tolist() == [3, 7, 0, 3]
    assert sums.tolist() == [3, 4, 768, 224]
    rows, ids, sums = episode_sums(np.zeros_like(mask), episode, values)
    assert rows.size == ids.size == sums.size == 0
    with pytest.raises(ValueError, match=r"\[b, w\] alike"):
        episode_sums(mask, episode, values[:, :3])


def test_bit_errors():
    pred = np.array([[0b1010_1010, 0b1111_0000, 3, 256, 7]])
    target = np.array([[0b1010_1011, 0b0000_1111, 3, 5, 257]])
    mask = np.array([[1, 1, 1, 1, 0]])
    # 1 + 8 + 0 + (marker predicted for a symbol: 8) ; the last position is masked out.
    assert bit_errors(pred, target, mask, 8) == 17
    assert bit_errors(pred, target, np.ones_like(mask), 8) == 25
    assert bit_errors(np.array([[9]]), np.array([[9]]), np.ones((1, 1)), 6) == 0
    rng = np.random.default_rng(1)
    p, t = rng.integers(0, 64, (4, 9)), rng.integers(0, 64, (4, 9))
    loop = sum(bin(int(a) ^ int(b)).count("1") for a, b in zip(p.ravel(), t.ravel(), strict=True))
    assert bit_errors(p, t, np.ones((4, 9)), 6) == loop
    with pytest.raises(ValueError):
        bit_errors(p, t, np.ones((4, 9)), 0)
