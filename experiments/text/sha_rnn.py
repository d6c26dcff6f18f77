"""A small SHA-RNN on a local text file (bytes, 90/5/5 split), for laptops and quick studies.

    recurrentlab train --config experiments/text/sha_rnn.py --workdir runs/text_sha_rnn \\
        --config.data.path=path/to/file.txt

``get_config(path)`` also takes the file (or folder) as its argument. Same architecture as the
paper at a quarter of the width (4 blocks, attention in block 2, Boom 4x, tied decoder, 3.4M
parameters) and the paper's optimiser (LAMB 2e-3, clip 0.25; 200 warmup steps, cosine decay).

Expected runtime: a training step took 2.7 CPU-seconds on a shared 2-core x86 machine (XLA
CPU, float32), so 4,000 steps are about 3 hours on a laptop CPU plus evaluation; far less on a
GPU (not timed yet). Expected result: not yet measured on a reference file (treat the first
run as the baseline); on English text a model of this size should get well under 2 bits per
byte of validation.
"""

from pathlib import Path

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config


def get_config(arg: str | None = None):
    if arg and not Path(arg).expanduser().exists():  # the argument is the data path
        raise ValueError(f"config argument '{arg}' is no text file or folder; give an "
                         f"existing path (or leave it off and set --config.data.path)")
    c = base_config()
    c.seed = 0  # parameters, dropout and data order
    c.model = model_config(
        "sha_rnn",
        d_model=256,  # embedding / LSTM / attention width (paper: 1024)
        d_ff=1024,  # Boom width, 4x as in the paper
        num_layers=4,  # blocks, as in the paper
        attn_layers=(-2,),  # a single head in block nlayers-2
        mem_len=1024,  # the last query of a window sees 1024 keys (768 carried + 256 new)
        dropout_input=0.1,  # embedding dropout (paper: 0.1)
        dropout_hidden=0.1,  # block dropout (paper: 0.1)
        dropout_attn=0.1,  # attention q/v dropout (paper: 0.1)
        dropout_attn_probs=0.1,  # attention-probability dropout (paper: 0.1)
        dropout_output=0.1,  # dropout before the decoder (paper: 0.1)
    )
    c.data = data_config("text", path=arg or "")  # a text file or folder; set data.path

    t = c.train
    t.batch_size = 16  # streams
    t.segment_len = 256  # tokens per model call and per window
    t.bptt_segments = 1  # gradient through one window, as the paper
    t.carry_across_windows = True  # stateful truncated BPTT: LSTM state and memory carried
    t.num_steps = 4000  # optimiser steps
    t.optimizer = "lamb"  # the paper's optimiser
    t.lr = 2e-3  # the paper's learning rate
    t.warmup_steps = 200  # linear warmup (paper: 800 of ~200k steps)
    t.schedule = "cosine"  # decay to the end of this short run
    t.final_lr_fraction = 0.1  # end at 2e-4
    t.eps = 1e-6  # pytorch-lamb default
    t.clip_norm = 0.25  # the paper's clipping
    t.log_every = 50  # train metrics
    t.eval_every = 500  # validation every 500 steps
    t.checkpoint_every = 500  # checkpoints with the evaluations

    e = c.eval
    e.batch_size = 8  # evaluation streams
    e.segment_len = 256  # as training
    e.final_splits = ("valid", "test")  # report both at the end
    return c
