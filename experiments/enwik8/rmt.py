"""Recurrent Memory Transformer on enwik8 in the RMT paper's controlled setup.

    recurrentlab train --config experiments/enwik8/rmt.py:mem10_depth2 \\
        --workdir runs/enwik8_rmt_mem10_depth2

``get_config(arg)`` with arg ``mem{M}_depth{D}``: M memory tokens (5, 10 or 20; any positive
integer is accepted) and memory BPTT depth D (0, 1 or 2): the gradient passes through the
memory into the D previous segments, i.e. ``train.bptt_segments = D + 1`` (a window of D + 1
segments of 128 tokens, every segment's loss counted, the carry handed to the next window
without gradient). Default ``mem10_depth2``.

Expected test bpc (RMT paper, Table 1): 5 tokens depth 1: 1.24, depth 2: 1.23; 10 tokens depth 2:
1.224-1.231 (several runs). Other combinations are not reported there; depth 0 is expected to
be clearly worse than depth 1 (no gradient ever reaches a memory write).

Setup (booydar/LM-RMT ``run_enwik8_base_memgpt.sh`` at segment 128): Transformer-XL backbone
with no XL cache (``--mem_len 0``), memory tokens at both ends (``--mem_at_end``), 12 layers,
d 512, 8 heads of 64, d_inner 2048, dropout 0.1, batch 22, Adam 2.5e-4 cosine over 400k steps,
clip 0.25. Initial memory: m copies of one fixed N(0, 1) vector (not trained), as the reference.
41.08M parameters at vocabulary 256 (the same as Transformer-XL; the paper reports 41M).

Expected runtime: not timed yet. A step runs D + 1 segments of 128 + 2M rows: depth 2 costs
about 3x a Transformer step.
"""

import re

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config

SEGMENT = 128  # tokens per model call


def parse(arg: str | None) -> tuple[int, int]:
    """``"mem10_depth2"`` -> (10, 2)."""
    match = re.fullmatch(r"mem(\d+)_depth(\d+)", arg or "mem10_depth2")
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"config arg '{arg}' must look like mem10_depth2 (memory tokens >= 1)")
    return int(match.group(1)), int(match.group(2))


def get_config(arg: str | None = None):
    num_mem, depth = parse(arg)
    c = base_config()
    c.seed = 1111  # the reference scripts' default --seed
    c.model = model_config(
        "rmt",
        num_mem_tokens=num_mem,  # --num_mem_tokens
        mem_init="shared_random",  # m copies of one random vector, trained, as the reference
        backbone="transformer_xl",  # the reference's MemTransformerLM, attn_type 0
        mem_len=0,  # --mem_len 0: memory tokens only, no XL cache
        read_mem_from_cache=False,  # reference default (irrelevant without a cache)
        num_layers=12,  # --n_layer 12
        d_model=512,  # --d_model 512
        num_heads=8,  # --n_head 8
        d_head=64,  # --d_head 64
        d_ff=2048,  # --d_inner 2048
        dropout=0.1,  # --dropout 0.1
        attn_dropout=0.0,  # --dropatt 0.0
        tie_weights=True,  # tie_weight=True in the reference
    )
    c.data = data_config("enwik8", path="data/enwik8")  # the unzipped 100M-byte file

    t = c.train
    t.batch_size = 22  # --batch_size 22
    t.segment_len = SEGMENT  # --tgt_len 128
    t.bptt_segments = depth + 1  # memory BPTT depth D: gradient through D + 1 segments
    t.carry_across_windows = True  # memory handed (detached) to the next window
    t.remat = depth > 0  # recompute segments in the backward pass: memory ~ K*|carry| + S
    t.num_steps = 400_000  # --max_step 400000
    t.optimizer = "adam"  # --optim adam
    t.lr = 2.5e-4  # --lr 0.00025
    t.schedule = "cosine"  # --scheduler cosine over max_step
    t.final_lr_fraction = 0.0  # --eta_min 0
    t.warmup_steps = 0  # --warmup_step 0
    t.clip_norm = 0.25  # --clip 0.25
    t.log_every = 200  # --log-interval 200
    t.eval_every = 4000  # --eval-interval 4000
    t.checkpoint_every = 4000  # checkpoint with each evaluation

    e = c.eval
    e.batch_size = 10  # the reference's eval_batch_size
    e.segment_len = SEGMENT  # --eval_tgt_len 128: memory written every 128 tokens
    e.final_splits = ("valid", "test")  # report both
    return c
