"""Byte and character corpora, memory-mapped (never read whole), laid out as ordered streams.

Corpora and their splits
------------------------
``enwik8``
    The first 10^8 bytes of the English Wikipedia dump of 2006-03-03 (Hutter Prize file).
    The unzipped file must be exactly 100,000,000 bytes; its MD5 is checked against the value
    published at http://mattmahoney.net/dc/textdata.html (``a1fa5ffddb56f4953e226637dabbb36a``)
    once, and the result is cached in a sidecar file keyed by size and mtime (see
    :func:`verify_checksum`). Split as salesforce/awd-lstm-lm ``data/enwik8/prep_enwik8.py``:
    train = bytes[:-10M] (90,000,000), valid = bytes[-10M:-5M], test = bytes[-5M:]. Vocabulary
    = all 256 byte values; newlines are bytes like any other and are counted (the ``.raw``
    files of that script), so bits per byte are over every byte of the split.
``text8``
    The first 10^8 characters of cleaned Wikipedia (lower-case a-z and space only). Only the
    size is verified (no published checksum of the unzipped file could be confirmed). Same
    split rule: 90M / 5M / 5M. 27 symbols: space -> 0, a..z -> 1..26.
``text``
    Any text file or folder, read as bytes (vocabulary 256). A file is split into the first
    90% / next 5% / last 5% (boundaries ``floor(0.9 N)`` and ``floor(0.95 N)``). A folder
    with ``train.txt`` uses ``train.txt`` / ``valid.txt`` / ``test.txt``; any other folder is
    every regular, non-hidden file directly inside it, sorted by name and concatenated, then
    split like one file.
``embedded``
    ``recurrentlab/data/embedded/licenses.txt`` (about 108 KB of licence texts, shipped with
    the package): the ``text`` rule on that file. A corpus for smoke tests, not for results.

Stream layout
-------------
A split of N tokens is cut into B contiguous streams of ``L = N // B`` tokens (the last
``N % B`` tokens are not used); stream b is ``split[b L : (b + 1) L]``. Window w of a stream
covers inputs ``[w W, w W + W)`` and targets ``[w W + 1, w W + W + 1)``, so a split holds
``n = (L - 1) // W`` full windows. Training step t reads window ``t mod n`` (epochs cycle) and
``reset`` is true at the start of each cycle. Evaluation reads the whole split in order: the
full windows, then one last window holding the remaining ``(L - 1) mod W`` positions of each
stream, zero-padded with mask 0, so every target of the streams is scored exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from recurrentlab.data.base import Dataset, check_split
from recurrentlab.errors import DataError

ENWIK8_SIZE = 100_000_000
ENWIK8_MD5 = "a1fa5ffddb56f4953e226637dabbb36a"  # mattmahoney.net/dc/textdata.html
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
TEXT8_SIZE = 100_000_000
TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
HELD_OUT = 5_000_000  # enwik8 / text8: bytes in valid and in test
TEXT_FRACTIONS = (0.9, 0.05, 0.05)  # "text" / "embedded": train, valid, test
EMBEDDED_PATH = Path(__file__).parent / "embedded" / "licenses.txt"
TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"


class ByteSource:
    """One or more files seen as a single read-only byte array, each file memory-mapped."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        self.maps = []
        sizes = []
        for path in self.paths:
            size = path.stat().st_size
            sizes.append(size)
            # np.memmap refuses empty files; an empty file contributes nothing.
            self.maps.append(np.memmap(path, dtype=np.uint8, mode="r") if size else None)
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Bytes ``[start, stop)`` as a fresh uint8 array (only those pages are touched)."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"read [{start}, {stop}) outside a source of {len(self)} bytes")
        out = np.empty(stop - start, dtype=np.uint8)
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        pos = start
        index = first
        while pos < stop:
            file_start, file_stop = int(self.starts[index]), int(self.starts[index + 1])
            if file_stop > pos:
                hi = min(stop, file_stop)
                out[pos - start:hi - start] = self.maps[index][pos - file_start:hi - file_start]
                pos = hi
            index += 1
        return out


class Split:
    """A contiguous range ``[offset, offset + length)`` of a :class:`ByteSource`."""

    def __init__(self, source: ByteSource, offset: int, length: int):
        self.source, self.offset, self.length = source, int(offset), int(length)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.source.read(self.offset + start, self.offset + stop)


def verify_checksum(path: Path, expected_md5: str, *, where: str) -> None:
    """Check the MD5 of ``path`` once; remember success in a sidecar keyed by size and mtime.

    The sidecar is ``<path>.md5ok`` (JSON: size, mtime_ns, md5) beside the file, or, where
    that folder is not writable, ``$XDG_CACHE_HOME/recurrentlab`` (default ``~/.cache``). A
    changed size or mtime invalidates it and the file is hashed again (in 16 MiB chunks).
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": expected_md5}
    candidates = [path.with_name(path.name + ".md5ok"), _cache_sidecar(path)]
    for sidecar in candidates:
        try:
            if json.loads(sidecar.read_text()) == key:
                return
        except (OSError, ValueError):
            continue
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    if digest.hexdigest() != expected_md5:
        raise DataError(f"'{path}' has MD5 {digest.hexdigest()}, not {expected_md5}: the file is "
                        f"corrupt; download it again from {where}")
    for sidecar in candidates:
        try:
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_text(json.dumps(key))
            return
        except OSError:
            continue


def _cache_sidecar(path: Path) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recurrentlab"
    name = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return root / f"md5ok-{name}.json"


class CorpusDataset(Dataset):
    """A corpus with train/valid/test splits served in the stream layout (module docstring)."""

    def __init__(self, name: str, splits: dict[str, Split], *, unit: str = "byte",
                 alphabet: str | None = None):
        self.name = name
        self.splits = splits
        self.unit = unit
        self.bits_per_symbol = 0
        self.alphabet = alphabet
        if alphabet is None:
            self.vocab_size = 256
            self._table = None
        else:
            self.vocab_size = len(alphabet)
            table = np.full(256, 255, dtype=np.uint8)  # 255: not a symbol of the alphabet
            for i, ch in enumerate(alphabet):
                table[ord(ch)] = i
            self._table = table

    # -- layout -----------------------------------------------------------------------------
    def split_len(self, split: str) -> int:
        check_split(split)
        return self.splits[split].length

    def _stream_len(self, split: str, batch_size: int, window_len: int) -> int:
        if batch_size < 1 or window_len < 1:
            raise DataError(f"batch_size and window_len must be >= 1, got {batch_size}, "
                            f"{window_len}")
        n = self.split_len(split)
        stream_len = n // batch_size
        if stream_len < window_len + 1:
            raise DataError(
                f"{self.name} split '{split}' has {n} {self.unit}s, too few for batch_size "
                f"{batch_size} x window {window_len} (needs {batch_size * (window_len + 1)}); "
                f"lower the batch size or the window")
        return stream_len

    def check_layout(self, batch_size: int, window_len: int, split: str = "train") -> None:
        self._stream_len(split, batch_size, window_len)

    def num_windows(self, split: str, batch_size: int, window_len: int) -> int:
        """Full windows per stream: ``(L - 1) // W``; training cycles over these."""
        return (self._stream_len(split, batch_size, window_len) - 1) // window_len

    def num_eval_windows(self, split: str, batch_size: int, window_len: int) -> int:
        stream_len = self._stream_len(split, batch_size, window_len)
        return -(-(stream_len - 1) // window_len)

    def _window(self, split: str, index: int, batch_size: int, window_len: int,
                reset: bool) -> dict[str, np.ndarray]:
        stream_len = self._stream_len(split, batch_size, window_len)
        data = self.splits[split]
        start = index * window_len
        stop = min(start + window_len + 1, stream_len)  # exclusive, stream coordinates
        valid = stop - start - 1  # target positions this window holds
        chunk = np.zeros((batch_size, window_len + 1), dtype=np.int32)
        for b in range(batch_size):
            raw = data.read(b * stream_len + start, b * stream_len + stop)
            chunk[b, :stop - start] = self._map(raw)
        mask = np.zeros((batch_size, window_len), dtype=np.float32)
        mask[:, :valid] = 1.0
        return {
            "inputs": chunk[:, :-1].copy(),
            "targets": chunk[:, 1:].copy(),
            "mask": mask,
            "reset": np.full((batch_size,), reset, dtype=bool),
            "episode": np.full((batch_size, window_len), -1, dtype=np.int32),
        }

    def _map(self, raw: np.ndarray) -> np.ndarray:
        if self._table is None:
            return raw.astype(np.int32)
        ids = self._table[raw]
        if (ids == 255).any():
            bad = int(raw[np.argmax(ids == 255)])
            raise DataError(f"{self.name} holds byte {bad}, which is not in its alphabet "
                            f"(space and a-z); the file is not text8")
        return ids.astype(np.int32)

    # -- protocol ---------------------------------------------------------------------------
    def train_window(self, step: int, batch_size: int, window_len: int) -> dict[str, np.ndarray]:
        n = self.num_windows("train", batch_size, window_len)
        index = int(step) % n
        return self._window("train", index, batch_size, window_len, reset=index == 0)

    def eval_windows(self, split: str, batch_size: int, window_len: int,
                     max_windows: int = 0) -> Iterator[dict[str, np.ndarray]]:
        count = self.num_eval_windows(split, batch_size, window_len)
        if max_windows > 0:
            count = min(count, max_windows)
        for index in range(count):
            yield self._window(split, index, batch_size, window_len, reset=index == 0)

    def encode(self, text: str) -> np.ndarray:
        if self._table is None:
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
        try:
            raw = np.frombuffer(text.lower().encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError:
            raise DataError(f"{self.name} encodes only space and a-z") from None
        return self._map(raw)

    def decode(self, ids) -> str:
        ids = np.asarray(ids).astype(np.int64).ravel()
        if self._table is None:
            return bytes(np.clip(ids, 0, 255).astype(np.uint8)).decode("utf-8", errors="replace")
        return "".join(self.alphabet[i] if 0 <= i < len(self.alphabet) else "?" for i in ids)


# -- builders ---------------------------------------------------------------------------------
def _held_out_splits(source: ByteSource) -> dict[str, Split]:
    n = len(source)
    return {
        "train": Split(source, 0, n - 2 * HELD_OUT),
        "valid": Split(source, n - 2 * HELD_OUT, HELD_OUT),
        "test": Split(source, n - HELD_OUT, HELD_OUT),
    }


def _fraction_splits(source: ByteSource) -> dict[str, Split]:
    n = len(source)
    a = int(n * TEXT_FRACTIONS[0])
    b = int(n * (TEXT_FRACTIONS[0] + TEXT_FRACTIONS[1]))
    return {"train": Split(source, 0, a), "valid": Split(source, a, b - a),
            "test": Split(source, b, n - b)}


def _sized_file(path: str, size: int, name: str, url: str) -> Path:
    if not path:
        raise DataError(f"data.path is empty; download {url}, unzip it and set data.path to "
                        f"the '{name}' file")
    p = Path(path).expanduser()
    if p.is_dir() and (p / name).is_file():
        p = p / name
    if not p.is_file():
        raise DataError(f"{name} not found at '{p}'; download {url}, unzip it and set "
                        f"data.path to the unzipped file")
    actual = p.stat().st_size
    if actual != size:
        raise DataError(f"'{p}' has {actual} bytes, but unzipped {name} has {size}; download "
                        f"{url} again and unzip it")
    return p


def enwik8(path: str, *, check_md5: bool = True) -> CorpusDataset:
    """enwik8 at ``path`` (the unzipped file, or a folder holding it).

    The size is always checked. ``check_md5=False`` (config field ``data.verify_checksum``)
    skips the MD5: meant for generated stand-in files, as the tests use.
    """
    p = _sized_file(path, ENWIK8_SIZE, "enwik8", ENWIK8_URL)
    if check_md5:
        verify_checksum(p, ENWIK8_MD5, where=ENWIK8_URL)
    return CorpusDataset("enwik8", _held_out_splits(ByteSource([p])), unit="byte")


def text8(path: str) -> CorpusDataset:
    """text8 at ``path`` (the unzipped file, or a folder holding it); size verified only."""
    p = _sized_file(path, TEXT8_SIZE, "text8", TEXT8_URL)
    return CorpusDataset("text8", _held_out_splits(ByteSource([p])), unit="char",
                         alphabet=TEXT8_ALPHABET)


def text(path: str, *, name: str = "text") -> CorpusDataset:
    """A text file or folder read as bytes, split as the module docstring says."""
    if not path:
        raise DataError("data.path is empty; set it to a text file or a folder of text files")
    p = Path(path).expanduser()
    if p.is_file():
        return CorpusDataset(name, _fraction_splits(ByteSource([p])), unit="byte")
    if not p.is_dir():
        raise DataError(f"'{p}' is neither a file nor a folder; set data.path to text to train on")
    if (p / "train.txt").is_file():
        splits = {}
        for split in ("train", "valid", "test"):
            f = p / f"{split}.txt"
            if not f.is_file():
                raise DataError(f"'{p}' has train.txt but no {split}.txt; add it, or rename "
                                f"train.txt to split the folder 90/5/5")
            source = ByteSource([f])
            splits[split] = Split(source, 0, len(source))
        return CorpusDataset(name, splits, unit="byte")
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise DataError(f"folder '{p}' holds no files to read")
    source = ByteSource(files)
    if len(source) == 0:
        raise DataError(f"the files in '{p}' are all empty")
    return CorpusDataset(name, _fraction_splits(source), unit="byte")


def embedded() -> CorpusDataset:
    """The licence texts shipped in the package."""
    if not EMBEDDED_PATH.is_file():
        raise DataError(f"the embedded corpus '{EMBEDDED_PATH}' is missing from this install; "
                        f"reinstall recurrentlab")
    return text(str(EMBEDDED_PATH), name="embedded")
