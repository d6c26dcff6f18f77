"""An AWD-LSTM on a local text file (bytes, 90/5/5 split), for laptops and quick studies.

    recurrentlab train --config experiments/text/lstm.py --workdir runs/text_lstm \\
        --config.data.path=path/to/file.txt

``get_config(path)`` also takes the file (or folder) as its argument. The character-level
Penn Treebank recipe of salesforce/awd-lstm-lm (3 layers, emsize 200, dropouth 0.25,
dropouti 0.1, dropout 0.1, wdrop 0.5, wdecay 1.2e-6, bptt 150, Adam 2e-3, lr / 10 at 60% and
80% of training) at half the width (nhid 512 instead of 1000: 4.19M parameters) and batch 16
instead of 128, so that it runs on a CPU.

Expected runtime: about 25 MFLOP per training token, 2,400 tokens per step: roughly 1-2 s per
step on 2 CPU cores (4,000 steps ~ 1.5 h), well under 0.1 s per step on a GPU (estimates, not
timed). Expected result: not yet measured on a reference file; on a few MB of English text
expect validation bits per byte well below 2 after 4,000 steps -- treat the first run as the
baseline.
"""

from pathlib import Path

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config

STEPS = 4000  # optimiser steps


def get_config(arg: str | None = None):
    if arg and not Path(arg).expanduser().exists():  # the argument is the data path
        raise ValueError(f"config argument '{arg}' is no text file or folder; give an "
                         f"existing path (or leave it off and set --config.data.path)")
    c = base_config()
    c.seed = 0  # parameters, dropout and data order
    c.model = model_config(
        "lstm",
        embed_dim=200,  # --emsize 200 (also the last layer's size: tied)
        hidden_dim=512,  # --nhid 1000 in the recipe; halved for a CPU
        num_layers=3,  # --nlayers 3
        tie_weights=True,  # as the recipe
        dropout=0.1,  # --dropout 0.1
        dropouth=0.25,  # --dropouth 0.25
        dropouti=0.1,  # --dropouti 0.1
        dropoute=0.0,  # --dropoute 0
        wdrop=0.5,  # --wdrop 0.5
    )
    c.data = data_config("text", path=arg or "")  # a text file or folder; set data.path

    t = c.train
    t.batch_size = 16  # streams (recipe: 128)
    t.segment_len = 150  # --bptt 150
    t.bptt_segments = 1  # gradient through one window, as the recipe
    t.carry_across_windows = True  # stateful truncated BPTT
    t.num_steps = STEPS  # optimiser steps
    t.optimizer = "adam"  # --optimizer adam
    t.lr = 2e-3  # --lr 2e-3
    t.schedule = "step"  # constant, then divided by 10 twice
    t.decay_boundaries = (int(0.6 * STEPS), int(0.8 * STEPS))  # --when 300 400 of 500 epochs
    t.decay_factor = 0.1  # lr / 10
    t.weight_decay = 1.2e-6  # --wdecay 1.2e-6 (L2, as torch's Adam)
    t.clip_norm = 0.25  # --clip 0.25 default
    t.log_every = 50  # train metrics
    t.eval_every = 500  # validation every 500 steps
    t.checkpoint_every = 500  # checkpoints with the evaluations

    e = c.eval
    e.batch_size = 8  # evaluation streams
    e.segment_len = 150  # as training
    e.final_splits = ("valid", "test")  # report both at the end
    return c
