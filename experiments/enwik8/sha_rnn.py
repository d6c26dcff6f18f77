"""SHA-RNN on enwik8, the recipe of Merity (2019) and the authors' README commands.

    recurrentlab train --config experiments/enwik8/sha_rnn.py --workdir runs/enwik8_sha_rnn
    recurrentlab train --config experiments/enwik8/sha_rnn.py:head_per_layer \\
        --workdir runs/enwik8_sha_rnn_hpl

``get_config()`` (single head, in block 2 of 4) -- expected test bpc 1.076 (paper; 52M
parameters as published, 53.83M counted here with the Overparam value gate, which the authors
fold away after training). Time: the authors report 1800 s per epoch on one Titan V (12 GB)
under fp16 AMP, 37 epochs ~ 18.5 GPU-hours; this float32 implementation has not been timed on
a GPU yet.

``get_config("head_per_layer")`` (attention in all 4 blocks) -- expected test bpc 1.068
(paper; 54M published, 63.30M counted here). Time: 4020 s per epoch on a Titan V, 37 epochs
~ 41 GPU-hours (the authors' README drops the batch to 8 to fit 12 GB; we keep 16).

``python -m recurrentlab.models.sha_rnn --config experiments/enwik8/sha_rnn.py`` prints the
parameter count of a variant.

Recipe (``python -u main.py --epochs 32 --dropouth 0.1 --dropouti 0.1 --dropout 0.1
--optimizer lamb --bptt 1024 --warmup 800 --lr 2e-3 --emsize 1024 --nhid 4096 --nlayers 4
--batch_size 16``, then 5 more epochs at ``--lr 1e-3``): an epoch is the 90M training bytes
laid out as 16 streams of 1024-byte windows, 5493 steps, so 32 + 5 epochs = 203,241 steps
with the learning rate halved at step 175,776. Differences from the authors' run: fixed
1024-token windows (they draw each length from N(1024, 5), halved with probability 0.05), no
random state drop (they reset the LSTM state and memory with probability 0.025 per batch),
optax LAMB without Smerity's ``min_trust=0.25`` floor, and the second phase continues the
schedule rather than restarting with a new 800-step warmup.
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config

TRAIN_BYTES = 90_000_000  # enwik8 train split: bytes[:-10M]
BATCH = 16  # streams
BPTT = 1024  # tokens per window
STEPS_PER_EPOCH = (TRAIN_BYTES // BATCH - 1) // BPTT  # 5493, as the authors' batchify/get_batch
EPOCHS, EXTRA_EPOCHS = 32, 5  # main run, then the second run at half the learning rate

VARIANTS = {
    "single_head": (-2,),  # attention in block nlayers-2 only (the authors' default)
    "head_per_layer": (0, 1, 2, 3),  # attention in every block
}


def get_config(arg: str | None = None):
    variant = arg or "single_head"
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}'; use one of {', '.join(VARIANTS)}")
    c = base_config()
    c.seed = 5512  # the authors' --seed of the main run
    c.model = model_config(
        "sha_rnn",
        d_model=1024,  # --emsize 1024: embedding, LSTM and attention width
        d_ff=4096,  # --nhid 4096: Boom width
        num_layers=4,  # --nlayers 4
        attn_layers=VARIANTS[variant],  # which blocks hold a single attention head
        mem_len=5000,  # num_max_positions: the last query of a window sees 5000 keys
        dropout_input=0.1,  # --dropouti 0.1
        dropout_hidden=0.1,  # --dropouth 0.1
        dropout_attn=0.1,  # attention q/v dropout (the authors reuse dropouth)
        dropout_attn_probs=0.1,  # attention-probability dropout (dropouth as well)
        dropout_output=0.1,  # --dropout 0.1
    )
    c.data = data_config("enwik8", path="data/enwik8")  # the unzipped 100M-byte file

    t = c.train
    t.batch_size = BATCH  # --batch_size 16
    t.segment_len = BPTT  # --bptt 1024: one model call per window, as the authors
    t.bptt_segments = 1  # gradient through the window only
    t.carry_across_windows = True  # LSTM state and memory carried, detached, across batches
    t.num_steps = (EPOCHS + EXTRA_EPOCHS) * STEPS_PER_EPOCH  # 203,241 steps
    t.optimizer = "lamb"  # --optimizer lamb
    t.lr = 2e-3  # --lr 2e-3
    t.warmup_steps = 800  # --warmup 800: linear from 0
    t.schedule = "step"  # constant after warmup, then the second phase
    t.decay_boundaries = (EPOCHS * STEPS_PER_EPOCH,)  # after 32 epochs ...
    t.decay_factor = 0.5  # ... continue at --lr 1e-3
    t.b1, t.b2 = 0.9, 0.999  # pytorch-lamb defaults
    t.eps = 1e-6  # pytorch-lamb default epsilon
    t.weight_decay = 1.2e-6  # main.py's --wdecay default (not overridden in the commands)
    t.clip_norm = 0.25  # --clip 0.25
    t.log_every = 100  # train metrics every 100 steps
    t.eval_every = STEPS_PER_EPOCH  # validate once per epoch, as the authors
    t.checkpoint_every = 1000  # about 10 minutes of training between checkpoints

    e = c.eval
    e.split = "valid"  # model selection on validation bpc
    e.batch_size = 10  # the authors' test_batch_size (their validation uses 16)
    e.segment_len = BPTT  # evaluate in 1024-byte windows, carrying state and memory
    e.final_splits = ("valid", "test")  # report both at the end
    return c
