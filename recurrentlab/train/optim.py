"""Optimisers and learning-rate schedules from ``config.train``."""

from __future__ import annotations

import ml_collections
import optax


def make_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup to ``lr``, then constant, cosine (to ``final_lr_fraction * lr``) or step.

    step: lr is multiplied by ``decay_factor`` at each of ``decay_boundaries`` (absolute steps).
    """
    warmup = int(t.warmup_steps)
    if t.schedule == "constant":
        main = optax.constant_schedule(t.lr)
    elif t.schedule == "cosine":
        main = optax.cosine_decay_schedule(
            t.lr, decay_steps=max(1, t.num_steps - warmup), alpha=t.final_lr_fraction
        )
    elif t.schedule == "step":
        boundaries = {int(b) - warmup: t.decay_factor for b in t.decay_boundaries if b > warmup}
        main = optax.piecewise_constant_schedule(t.lr, boundaries)
    else:
        raise ValueError(f"unknown schedule {t.schedule}")
    if warmup == 0:
        return main
    ramp = optax.linear_schedule(0.0, t.lr, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping, then the optimiser with its weight decay."""
    lr = make_schedule(t)
    parts = []
    if t.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(t.clip_norm))
    if t.optimizer == "adam":
        if t.weight_decay:
            parts.append(optax.add_decayed_weights(t.weight_decay))
        parts.append(optax.adam(lr, b1=t.b1, b2=t.b2, eps=t.eps))
    elif t.optimizer == "adamw":
        parts.append(optax.adamw(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay))
    elif t.optimizer == "lamb":
        parts.append(optax.lamb(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay))
    elif t.optimizer == "sgd":
        if t.weight_decay:
            parts.append(optax.add_decayed_weights(t.weight_decay))
        parts.append(optax.sgd(lr, momentum=t.momentum or None))
    else:
        raise ValueError(f"unknown optimizer {t.optimizer}")
    return optax.chain(*parts)
