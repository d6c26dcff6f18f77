"""The main job: a small LSTM language model on the embedded corpus, on a laptop CPU.

    recurrentlab train --config experiments/tiny/lstm.py --workdir runs/tiny

Data: the ``embedded`` corpus (108 KB of licence texts shipped in the package; bytes, split
90/5/5: 97,648 / 5,425 / 5,425 bytes). Model: byte embedding 64 -> LSTM 384 -> LSTM 384 ->
untied decoder, 1.99M parameters, light AWD regularisation (locked dropout 0.1, DropConnect
0.1 on W_hh). 1,000 Adam steps of 16 streams x 64 bytes (~10 passes over the training split).

Expected runtime: about 3 minutes on a 2-core CPU. Measured (jax 0.10.2, CPU): 207 CPU-seconds
for the whole command (compile 7 s, training, evaluation), 5 min 14 s of wall time on a shared
2-core machine where the run got 0.65 of a core on average; 2,200-5,600 training tokens/s
depending on the load.

Expected result (measured, seed 0): training bits per byte fall from 8.0 at step 0 to 4.5
(step 50, the unigram plateau), 2.7 (step 200), 1.3 (step 1000); validation 2.94 / 2.40 /
2.23 / 2.23 bits per byte at steps 250 / 500 / 750 / 1000; final test 2.36 bits per byte
(58% next-byte accuracy). The gap to training is the small corpus: the valid and test
splits are the last licences of the file.
"""

from recurrentlab.config import base_config
from recurrentlab.data import data_config
from recurrentlab.models import model_config


def get_config(arg: str | None = None):
    if arg:  # this config has no variants
        raise ValueError(f"unknown config argument '{arg}'; this config takes none")
    c = base_config()
    c.seed = 0  # parameters, dropout and data order
    c.model = model_config(
        "lstm",
        embed_dim=64,  # byte embedding
        hidden_dim=384,  # units of both layers
        num_layers=2,  # stacked single-layer LSTMs
        tie_weights=False,  # own 384 -> 256 decoder (tied, this small model sits far longer
        #                     on the unigram plateau: ~4.6 bits after 1,000 steps)
        dropout=0.1,  # locked dropout on the output
        dropouth=0.1,  # locked dropout between the layers
        dropouti=0.05,  # locked dropout on the embeddings
        dropoute=0.0,  # no embedding row dropout (256 symbols only)
        wdrop=0.1,  # DropConnect on W_hh
    )
    c.data = data_config("embedded")  # no download

    t = c.train
    t.batch_size = 16  # streams (each ~6 KB of the training split)
    t.segment_len = 64  # tokens per model call and per window
    t.bptt_segments = 1  # gradient through one window
    t.carry_across_windows = True  # stateful truncated BPTT, as AWD-LSTM
    t.num_steps = 1000  # ~10 passes over the training split
    t.optimizer = "adam"  # Adam
    t.lr = 3e-3  # peak learning rate
    t.warmup_steps = 20  # short linear warmup
    t.schedule = "cosine"  # decay to the end
    t.final_lr_fraction = 0.1  # end at 3e-4
    t.clip_norm = 0.25  # AWD-LSTM's clipping
    t.log_every = 50  # train metrics
    t.eval_every = 250  # validation bits per byte every 250 steps
    t.checkpoint_every = 250  # checkpoints with the evaluations

    e = c.eval
    e.batch_size = 8  # evaluation streams
    e.segment_len = 128  # longer calls at evaluation (same model, state carried)
    e.final_splits = ("valid", "test")  # report both at the end
    return c
