"""Transformer-XL on enwik8: the RMT paper's controlled setup with a cache of 0/10/40/100/200,
or the Transformer-XL paper's 12-layer run.

    recurrentlab train --config experiments/enwik8/transformer_xl.py:mem200 \\
        --workdir runs/enwik8_xl_mem200

``get_config(arg)``, arg one of:

=========  =========  =======  ====================================================
arg        segment    mem_len  expected test bpc (source)
=========  =========  =======  ====================================================
mem0       128        0        1.401 (RMT paper's "Transformer": this code, no cache)
mem10      128        10       1.283 (RMT paper, Table 1)
mem40      128        40       1.230 (RMT paper)
mem100     128        100      1.178 (RMT paper)
mem200     128        200      1.140 (RMT paper; default)
paper      512        512      1.06  (Transformer-XL paper, 12L base)
=========  =========  =======  ====================================================

Setup (booydar/LM-RMT ``run_enwik8_base_baseline.sh``; kimiyoung/transformer-xl
``run_enwik8_base.sh``): 12 layers, d 512, 8 heads of 64, d_inner 2048, dropout 0.1, dropatt 0,
batch 22, Adam 2.5e-4 cosine over 400k steps, clip 0.25. 41.08M parameters at vocabulary 256,
whatever mem_len (the paper reports 41M).

Evaluation: the RMT paper's runs evaluate with the segment and cache they trained with.
``paper`` evaluates as the published number was obtained (``run_enwik8_base.sh eval``):
segments of 80, mem_len 2100, clamp_len 820, same_length, set through
``eval.model_overrides`` (same parameters); periodic validation uses it too, so it is slower
than training per token.

Expected runtime: not timed yet; 400k steps x 22 x 128 tokens = 1.1B tokens (``paper``: 4.5B).
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config

VARIANTS = {  # arg: (segment_len, mem_len)
    "mem0": (128, 0),
    "mem10": (128, 10),
    "mem40": (128, 40),
    "mem100": (128, 100),
    "mem200": (128, 200),
    "paper": (512, 512),
}


def get_config(arg: str | None = None):
    variant = arg or "mem200"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}'; use one of {', '.join(VARIANTS)}")
    segment, mem_len = VARIANTS[variant]
    c = base_config()
    c.seed = 1111  # the reference scripts' default --seed
    c.model = model_config(
        "transformer_xl",
        num_layers=12,  # --n_layer 12
        d_model=512,  # --d_model 512
        num_heads=8,  # --n_head 8
        d_head=64,  # --d_head 64
        d_ff=2048,  # --d_inner 2048
        dropout=0.1,  # --dropout 0.1
        attn_dropout=0.0,  # --dropatt 0.0
        mem_len=mem_len,  # --mem_len: cached positions per layer
        clamp_len=0,  # --clamp_len -1 (off)
        tie_weights=True,  # tie_weight=True in the reference
    )
    c.data = data_config("enwik8", path="data/enwik8")  # the unzipped 100M-byte file

    t = c.train
    t.batch_size = 22  # --batch_size 22
    t.segment_len = segment  # --tgt_len
    t.bptt_segments = 1  # the cache is gradient-stopped: one segment per window
    t.carry_across_windows = True  # the cache carries over to the next window
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
    e.segment_len = 128  # --eval_tgt_len 128
    e.final_splits = ("valid", "test")  # report both
    if variant == "paper":  # the published evaluation (run_enwik8_base.sh eval)
        e.segment_len = 80  # --tgt_len 80
        e.model_overrides.mem_len = 2100  # --mem_len 2100 (same parameters)
        e.model_overrides.clamp_len = 820  # --clamp_len 820
        e.model_overrides.same_length = True  # --same_length
    return c
