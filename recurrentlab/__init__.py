"""recurrentlab: what does recurrence buy over attention, and at what cost?

Faithful JAX/Flax implementations of recurrent and memory language models (LSTM, SHA-RNN,
RMT, NTM) beside attention baselines (Transformer, Transformer-XL), one truncated-BPTT
trainer that treats them alike, and the sweeps that compare them.
"""

__version__ = "0.1.0"
