"""Pallas kernels for recurrentlab's memory ops (installed as ``recurrentlab.kernels``).

``memory_attention``  flash-style attention of a segment over [memory; segment] keys.
``ntm_memory``        one fused NTM memory step (addressing, read, erase/add write).

Each kernel matches a plain-jnp reference in ``recurrentlab.ops`` and takes an ``interpret``
flag so CPU tests can run it; modules are imported lazily by the ops that dispatch to them.
"""
