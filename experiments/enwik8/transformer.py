"""Decoder-only Transformer on enwik8 in the RMT paper's controlled setup (no memory at all).

    recurrentlab train --config experiments/enwik8/transformer.py --workdir runs/enwik8_transformer

Setup (Bulatov et al. 2022, Table 1; booydar/LM-RMT ``run_enwik8_base_*.sh``): 12 layers,
d 512, 8 heads, d_ff 2048, dropout 0.1, segment 128, batch 22, Adam 2.5e-4 with cosine decay
over 400k steps, gradient clipping 0.25. Every segment is read alone (carry ``()``).

Expected result: test bpc about 1.40 (the paper's Transformer baseline, 1.401). Note that the
paper's baseline is the Transformer-XL code with ``mem_len 0`` (relative positions, post-LN);
that exact model is ``experiments/enwik8/transformer_xl.py:mem0``. This config is the
standard pre-LN GPT-style decoder with learned positions (38.03M parameters at vocabulary 256;
the XL-code baseline has 41.08M: its r_net projections, u/v biases and output bias).

Expected runtime: not timed on a GPU yet; the run reads 400k steps x 22 x 128 = 1.1B tokens.
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config

SEGMENT = 128  # tokens per model call (tgt_len 128 in the RMT paper's enwik8 runs)


def get_config(arg: str | None = None):
    if arg:  # this config has no variants
        raise ValueError(f"unknown config argument '{arg}'; this config takes none")
    c = base_config()
    c.seed = 1111  # the reference scripts' default --seed
    c.model = model_config(
        "transformer",
        num_layers=12,  # --n_layer 12
        d_model=512,  # --d_model 512
        num_heads=8,  # --n_head 8 (head width 64 = --d_head 64)
        d_ff=2048,  # --d_inner 2048
        dropout=0.1,  # --dropout 0.1
        attn_dropout=0.0,  # --dropatt 0.0 (keeps the fused attention path in training)
        max_len=SEGMENT,  # learned positions for one segment
        positions="learned",  # absolute learned positions
        tie_weights=True,  # tied input/output embedding, as the reference (tie_weight=True)
    )
    c.data = data_config("enwik8", path="data/enwik8")  # the unzipped 100M-byte file

    t = c.train
    t.batch_size = 22  # --batch_size 22
    t.segment_len = SEGMENT  # --tgt_len 128
    t.bptt_segments = 1  # one segment per window: nothing to backpropagate through
    t.carry_across_windows = True  # irrelevant: the carry is ()
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
    e.segment_len = SEGMENT  # --eval_tgt_len 128
    e.final_splits = ("valid", "test")  # report both
    return c
