"""Benchmarks: throughput against peers, memory against the BPTT horizon, compile time, and
profiles of a step per compiled operation.

``recurrentlab bench --config experiments/bench/<name>.py [--out DIR]`` runs a bench config
(:func:`recurrentlab.bench.config.bench_config`) and writes ``bench.md`` and ``bench.json``.
"""

from recurrentlab.bench.config import bench_config, entry
from recurrentlab.bench.report import to_markdown
from recurrentlab.bench.runner import run_bench

__all__ = ["bench_config", "entry", "run_bench", "to_markdown"]
