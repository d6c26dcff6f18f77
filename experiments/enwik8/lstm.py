"""AWD-LSTM on enwik8, the recipe of salesforce/awd-lstm-lm's README (Merity et al. 2018).

    recurrentlab train --config experiments/enwik8/lstm.py --workdir runs/enwik8_lstm

Expected result: test 1.232 bpc (Merity, Keskar & Socher 2018, "An Analysis of Neural Language
Modeling at Multiple Scales", 3-layer AWD-LSTM, ~47M parameters; counted here: 47,290,496 --
embedding 102,400, LSTM layers 16,501,120 / 27,099,520 / 3,587,200, decoder bias 256, the
decoder tied to the embedding).

Expected runtime: not measured here. About 284 MFLOP per training token (3 x 2 x 47.3M
multiply-adds), 90M tokens per epoch, 50 epochs: 1.3e18 FLOP; at an effective 30-60 TFLOP/s
(the recurrent matmuls are [128, h] x [h, 4h], latency-bound at batch 128) that is roughly
6-12 GPU-hours on one A100/H100. A public log of the authors' code shows 122 ms per batch on
an unnamed GPU, ~7 minutes per epoch, ~6 hours for 50 epochs.

Recipe (``python -u main.py --epochs 50 --nlayers 3 --emsize 400 --nhid 1840 --alpha 0
--beta 0 --dropoute 0 --dropouth 0.1 --dropouti 0.1 --dropout 0.4 --wdrop 0.2 --wdecay 1.2e-6
--bptt 200 --batch_size 128 --optimizer adam --lr 1e-3 --data data/enwik8 --when 25 35``,
``--tied`` and ``--clip 0.25`` by default): an epoch is the 90M training bytes laid out as 128
streams of 200-byte windows, 90e6 // (128 * 200) = 3515 steps (the authors' log shows 3515
batches per epoch); 50 epochs = 175,750 steps, learning rate / 10 after epochs 25 and 35.

Differences from the authors' run: fixed 200-token windows (they draw each length from
N(200, 5), halved with probability 0.05, and rescale the learning rate by length / 200);
dropout masks are drawn once per window, which with one segment per window is the authors'
once per batch; evaluation uses 10 streams for test as well (they use batch 1 for test,
10 for validation); the model with the best validation loss is not restored before the test
(the run evaluates its final parameters).
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config

TRAIN_BYTES = 90_000_000  # enwik8 train split: bytes[:-10M]
BATCH = 128  # --batch_size 128
BPTT = 200  # --bptt 200
STEPS_PER_EPOCH = TRAIN_BYTES // (BATCH * BPTT)  # 3515 batches per epoch
EPOCHS = 50  # --epochs 50
WHEN = (25, 35)  # --when 25 35: divide the learning rate by 10 after these epochs


def get_config(arg: str | None = None):
    if arg:  # this config has no variants
        raise ValueError(f"unknown config argument '{arg}'; this config takes none")
    c = base_config()
    c.seed = 1111  # main.py's --seed default
    c.model = model_config(
        "lstm",
        embed_dim=400,  # --emsize 400 (also the last layer's size: tied)
        hidden_dim=1840,  # --nhid 1840
        num_layers=3,  # --nlayers 3
        tie_weights=True,  # main.py sets args.tied = True
        dropout=0.4,  # --dropout 0.4: locked dropout on the last layer's output
        dropouth=0.1,  # --dropouth 0.1: locked dropout between layers
        dropouti=0.1,  # --dropouti 0.1: locked dropout on the embeddings
        dropoute=0.0,  # --dropoute 0: no embedding (row) dropout
        wdrop=0.2,  # --wdrop 0.2: DropConnect on every W_hh
        ar_alpha=0.0,  # --alpha 0
        tar_beta=0.0,  # --beta 0
    )
    c.data = data_config("enwik8", path="data/enwik8")  # the unzipped 100M-byte file

    t = c.train
    t.batch_size = BATCH  # 128 streams
    t.segment_len = BPTT  # one model call per 200-byte window
    t.bptt_segments = 1  # gradient through the window only, as the authors
    t.carry_across_windows = True  # hidden state carried, detached (repackage_hidden)
    t.num_steps = EPOCHS * STEPS_PER_EPOCH  # 175,750 steps
    t.optimizer = "adam"  # --optimizer adam
    t.lr = 1e-3  # --lr 1e-3
    t.schedule = "step"  # constant, divided at the --when epochs
    t.decay_boundaries = tuple(e * STEPS_PER_EPOCH for e in WHEN)  # steps 87,875 and 123,025
    t.decay_factor = 0.1  # lr / 10 at each boundary
    t.weight_decay = 1.2e-6  # --wdecay 1.2e-6, L2 added to the gradient as torch's Adam
    t.clip_norm = 0.25  # --clip 0.25 default
    t.log_every = 200  # --log-interval 200
    t.eval_every = STEPS_PER_EPOCH  # validate once per epoch, as the authors
    t.checkpoint_every = 1000  # a checkpoint every ~2 minutes of GPU time

    e = c.eval
    e.split = "valid"  # validation bpc each epoch
    e.batch_size = 10  # eval_batch_size = 10 (validation)
    e.segment_len = BPTT  # evaluate in 200-byte windows, carrying state
    e.final_splits = ("valid", "test")  # report both at the end
    return c
