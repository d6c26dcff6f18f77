"""Pictures of an NTM at work: head weightings, erase/add vectors and memory over time.

``NTM.trace(tokens, carry)`` returns an :class:`~recurrentlab.models.ntm.NTMTrace` (every step's
memory, read/write weightings, reads, erase and add vectors, logits); :func:`plot_ntm_trace`
draws one example of it as a PNG, in the style of Graves et al.'s (2014) memory-use figures::

    trace, _ = model.trace(tokens, model.init_carry(tokens.shape[0]))
    plot_ntm_trace(trace, "copy.png", bits=8)

Panels, time on the x axis: the input (bit channels when ``bits`` > 0, else token ids), the
output (marginal P(bit_j = 1) of the predicted token distribution, or the argmax token), the
add vectors, then per head its weighting over the memory slots (slot on the y axis), and
finally the memory after the last step (slots x width). Uses matplotlib's Agg canvas directly,
so it never touches the global backend (safe in notebooks and on headless machines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _bits(tokens: np.ndarray, bits: int) -> np.ndarray:
    """[t] tokens -> [bits, t] little-endian bit channels (zeros for ids >= 2^bits)."""
    table = (tokens[None, :] >> np.arange(bits)[:, None]) & 1
    return (table * (tokens[None, :] < 2**bits)).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def trace_panels(trace: Any, *, example: int = 0, bits: int = 0) -> list[tuple[str, np.ndarray]]:
    """The images :func:`plot_ntm_trace` draws, as ``(title, 2-D array)`` pairs (rows = y)."""
    tokens = np.asarray(trace.tokens[example])
    logits = np.asarray(trace.logits[example], np.float64)
    panels: list[tuple[str, np.ndarray]] = []
    if bits:
        panels.append(("input bits", _bits(tokens, bits)))
        probs = _softmax(logits)[:, : 2**bits]  # [t, 2^bits]
        table = _bits(np.arange(2**bits), bits)  # [bits, 2^bits]
        panels.append(("output P(bit = 1)", table @ probs.T))
    else:
        panels.append(("input token", tokens[None, :].astype(np.float32)))
        panels.append(("predicted token", logits.argmax(-1)[None, :].astype(np.float32)))
    add = np.asarray(trace.add[example])  # [t, hw, m]
    for h in range(add.shape[1]):
        panels.append((f"add vector, write head {h}", add[:, h].T))
    write_w = np.asarray(trace.write_w[example])  # [t, hw, n]
    for h in range(write_w.shape[1]):
        panels.append((f"write weighting, head {h}", write_w[:, h].T))
    read_w = np.asarray(trace.read_w[example])  # [t, hr, n]
    for h in range(read_w.shape[1]):
        panels.append((f"read weighting, head {h}", read_w[:, h].T))
    panels.append(("memory after the last step (slot x width)",
                   np.asarray(trace.memory[example, -1])))
    return panels


def plot_ntm_trace(
    trace: Any, path: str | Path, *, example: int = 0, bits: int = 0, title: str | None = None
) -> Path:
    """Draw ``trace`` (an ``NTMTrace``) for batch row ``example`` into the PNG file ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = trace_panels(trace, example=example, bits=bits)
    heights = [max(1.0, min(4.0, p.shape[0] / 8)) for _, p in panels]
    fig = Figure(figsize=(10, 1.0 + 0.9 * sum(heights) + 0.4 * len(panels)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights})
    for ax, (name, image) in zip(np.atleast_1d(axes), panels, strict=True):
        cmap = "RdBu_r" if name.startswith(("add", "memory")) else "gray_r"
        if name.startswith(("add", "memory")):
            bound = float(np.abs(image).max()) or 1.0
            im = ax.imshow(image, aspect="auto", cmap=cmap, vmin=-bound, vmax=bound,
                           interpolation="nearest")
        else:
            im = ax.imshow(image, aspect="auto", cmap=cmap, interpolation="nearest")
        ax.set_title(name, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
