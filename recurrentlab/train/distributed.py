"""One run over many devices and many hosts: the mesh, where arrays live, preemption.

Devices. A 1-D mesh with one axis, ``data`` (``config.mesh.data_axis`` devices; 0 = all).
The global batch — ``B`` streams — is split over ``data``: each device holds ``B/n`` streams
and the carry of exactly those streams, so truncated BPTT never moves a carry between
devices. Parameters and optimiser state are replicated, or, with ``mesh.shard_params``
(FSDP-style), each leaf is split along its largest axis that ``n`` divides (leaves with no
such axis stay replicated); optimiser moments have their parameter's shape and so get the
same split. XLA inserts the gathers and reduce-scatters; the update is the same update.
Because the loss is a mean over the global batch, ``n`` devices follow the 1-device
trajectory up to the order of floating-point reductions.

Hosts. ``jax.distributed.initialize`` runs before anything touches a device when a
coordinator is configured (``mesh.coordinator_address`` / ``mesh.num_processes`` /
``mesh.process_id``, or the ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` environment), or detected: an ``srun`` step with more than one task, or
a Cloud TPU VM that is one of several workers (then jax finds the coordinator and ranks
itself); ``mesh.distributed="on"`` forces it (jax auto-detects the rest), ``"off"`` stops
it. Every process computes the same global window (a pure function of the step, cheap next
to the model) and hands jax only the rows its own devices hold
(``jax.make_array_from_process_local_data``); replicated arrays are assembled from identical
host copies (``jax.make_array_from_callback``).
Metrics, TensorBoard and ``summary.json`` come from process 0; Orbax checkpoints are written
by all processes together and restore onto any device count (the template's shardings
decide where restored arrays go).

Preemption. :class:`PreemptionGuard` turns SIGTERM into a flag; the trainer checks it after
every step, saves a checkpoint of that step, waits for Orbax and raises :class:`Preempted`
(``recurrentlab train`` prints how to resume and exits with status 2). With several
processes the flag is max-reduced over all devices one step late, so every process stops
after the same step without a blocking host round-trip per step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recurrentlab.errors import ConfigError, RecurrentLabError
from recurrentlab.train.state import TrainState

DATA = "data"  # the mesh axis name


class Preempted(RecurrentLabError):
    """Training stopped on SIGTERM after saving a checkpoint; re-running resumes it."""


# ----------------------------------------------------------------------------- processes


def _slurm_multi_task() -> bool:
    """Inside an ``srun`` step of several tasks (not a batch script that merely holds them)."""
    needed = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS")
    return all(k in os.environ for k in needed) and int(os.environ["SLURM_STEP_NUM_TASKS"]) > 1


def _cloud_tpu_multi_host() -> bool:
    """A Cloud TPU VM that is one worker of several (a pod slice or several slices).

    A single-host TPU VM runs as one process: starting jax.distributed there would only bind
    a fixed coordinator port and keep two runs from sharing the VM.
    """
    try:  # jax's own detection; private, so anything missing means "no"
        from jax._src.clusters import cloud_tpu_cluster as tpu

        if not getattr(tpu, "running_in_cloud_tpu_vm", False):
            return False
        if os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
            return True
        for name in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
            if "," in os.environ.get(name, ""):
                return True
        if tpu.GceTpuCluster.is_env_present():
            return len(tpu.GceTpuCluster._get_worker_list_in_slice()) > 1
    except Exception:
        return False
    return False


def distributed_arguments(mesh: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """The arguments of ``jax.distributed.initialize`` this config asks for; None = single process.

    ``mesh.distributed``: ``"auto"`` (configured or detected), ``"on"`` (always; jax detects
    the rest, e.g. on a Cloud TPU pod) or ``"off"``.
    """
    mode = mesh.get("distributed", "auto")
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"mesh.distributed '{mode}' unknown; use auto, on or off")
    if mode == "off":
        return None
    address = mesh.get("coordinator_address", "") or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num = mesh.get("num_processes", 0) or int(os.environ.get("JAX_NUM_PROCESSES", 0))
    pid = mesh.get("process_id", -1)
    if pid < 0 and "JAX_PROCESS_ID" in os.environ:
        pid = int(os.environ["JAX_PROCESS_ID"])
    if address:
        if not num or pid < 0:
            raise ConfigError(f"mesh.coordinator_address={address} needs mesh.num_processes and "
                              f"mesh.process_id (or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
        if not 0 <= pid < num:
            raise ConfigError(f"mesh.process_id={pid} is not in [0, {num})")
        return {"coordinator_address": address, "num_processes": num, "process_id": pid}
    if mode == "on" or _slurm_multi_task() or _cloud_tpu_multi_host():
        return {}  # jax auto-detects Slurm, Open MPI and Cloud TPU
    return None


def initialize_distributed(config: ml_collections.ConfigDict) -> bool:
    """Start ``jax.distributed`` if ``config`` asks for it; True when running multi-process.

    Must run before the first jax computation of the process (building a model counts).
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    arguments = distributed_arguments(config.mesh)
    if arguments is None:
        return False
    try:
        jax.distributed.initialize(**arguments)
    except RuntimeError as error:
        if "before any JAX" in str(error) or "backend" in str(error):
            raise ConfigError("jax.distributed must start before any jax computation; call "
                              "train_and_evaluate in a fresh process") from None
        raise
    return jax.process_count() > 1


def is_main_process() -> bool:
    return jax.process_index() == 0


def main_process_first(fn, *args, **kwargs):
    """``fn(*args)`` on process 0, then on the others (e.g. creating a workdir once)."""
    if jax.process_count() == 1:
        return fn(*args, **kwargs)
    from jax.experimental import multihost_utils

    result = fn(*args, **kwargs) if is_main_process() else None
    multihost_utils.sync_global_devices(f"recurrentlab:{getattr(fn, '__name__', 'fn')}")
    return result if is_main_process() else fn(*args, **kwargs)


# ----------------------------------------------------------------------------- mesh


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """A 1-D ``data`` mesh; the global batch (streams) must divide over it."""
    devices = jax.devices()
    n = config.mesh.data_axis or len(devices)
    if n > len(devices):
        raise ConfigError(f"mesh.data_axis={n} but only {len(devices)} devices are visible")
    if jax.process_count() > 1 and n != len(devices):
        raise ConfigError(f"mesh.data_axis={n} with {jax.process_count()} processes: a multi-host "
                          f"run uses all {len(devices)} devices; set mesh.data_axis=0")
    for name, batch in (("train.batch_size", config.train.batch_size),
                        ("eval.batch_size", config.eval.batch_size)):
        if batch % n:
            raise ConfigError(f"{name}={batch} does not divide over {n} devices; "
                              f"use a multiple of {n} or set mesh.data_axis")
    return Mesh(np.array(devices[:n]), (DATA,))


def param_spec(shape: tuple[int, ...], n: int) -> PartitionSpec:
    """FSDP split of one leaf: its largest axis that ``n`` divides, else replicated."""
    if n <= 1:
        return PartitionSpec()
    axes = [a for a, size in enumerate(shape) if size >= n and size % n == 0]
    if not axes:
        return PartitionSpec()
    axis = max(axes, key=lambda a: (shape[a], -a))  # largest; the first of equals
    return PartitionSpec(*([None] * axis + [DATA]))


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)


class Placement:
    """Where arrays live: batch and carry split over ``data``; parameters and optimiser state
    replicated, or split FSDP-style when ``shard_params``."""

    def __init__(self, mesh: Mesh, *, shard_params: bool = False):
        self.mesh = mesh
        self.size = mesh.devices.size
        self.shard_params = shard_params
        self.sharded = NamedSharding(mesh, PartitionSpec(DATA))
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.multi_process = jax.process_count() > 1

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> Placement:
        return cls(make_mesh(config), shard_params=bool(config.mesh.get("shard_params", False)))

    # -- shardings
    def param_sharding(self, shape: tuple[int, ...]) -> NamedSharding:
        if not self.shard_params:
            return self.replicated
        return NamedSharding(self.mesh, param_spec(tuple(shape), self.size))

    def per_stream(self, tree: Any) -> Any:
        """Shardings of a batch-first tree (a carry): each device holds its streams."""
        return jax.tree.map(lambda x: self.sharded, tree)

    def state_shardings(self, state: TrainState) -> TrainState:
        """Shardings of a train state (works on arrays and on tracers inside ``jit``)."""
        params = lambda tree: jax.tree.map(lambda x: self.param_sharding(x.shape), tree)
        replicated = lambda tree: jax.tree.map(lambda x: self.replicated, tree)
        return TrainState(params=params(state.params), opt_state=params(state.opt_state),
                          carry=self.per_stream(state.carry), step=replicated(state.step),
                          rng=replicated(state.rng),
                          influence=self.per_stream(state.influence))  # train.carry_gradient

    def constrain(self, state: TrainState) -> TrainState:
        """Pin a train state computed inside ``jit`` to its shardings."""
        return jax.tree.map(jax.lax.with_sharding_constraint, state, self.state_shardings(state))

    # -- placing host values
    def _put(self, x: Any, sharding: NamedSharding) -> jax.Array:
        if not self.multi_process:
            return jax.device_put(x, sharding)
        if _is_key(x):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(self._put(jax.random.key_data(x), sharding), impl=impl)
        host = np.asarray(x)  # identical on every process
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    def _put_rows(self, x: Any) -> jax.Array:
        """A batch-first global array from the rows this process's devices hold."""
        if not self.multi_process:
            return jax.device_put(x, self.sharded)
        host = np.asarray(x)
        rows = [index[0] for index in
                self.sharded.addressable_devices_indices_map(host.shape).values()]
        start = min(r.start or 0 for r in rows)
        stop = max(host.shape[0] if r.stop is None else r.stop for r in rows)
        return jax.make_array_from_process_local_data(self.sharded, host[start:stop], host.shape)

    def batch(self, tree: Any) -> Any:
        return jax.tree.map(self._put_rows, tree)

    def replicate(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: self._put(x, self.replicated), tree)

    def params(self, tree: Any) -> Any:
        """Parameters or optimiser state: replicated, or split by :func:`param_spec`."""
        return jax.tree.map(lambda x: self._put(x, self.param_sharding(np.shape(x))), tree)

    def fetch(self, x: jax.Array) -> np.ndarray:
        """The global value of ``x`` as a host array, on every process."""
        if not self.multi_process or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(x)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# ----------------------------------------------------------------------------- preemption


class PreemptionGuard:
    """``with PreemptionGuard(placement) as guard:`` SIGTERM sets a flag; ``guard.should_stop()``
    (once per step, on every process) says when to checkpoint and stop.

    Outside the main thread no handler can be installed and the guard never fires.
    """

    def __init__(self, placement: Placement | None = None, signals=(signal.SIGTERM,)):
        self.requested = False
        self.signal_name = ""
        self._signals = signals
        self._previous: dict[int, Any] = {}
        self._placement = placement
        self._multi = placement is not None and placement.multi_process
        self._pending: jax.Array | None = None
        self._reduce = jax.jit(jnp.max) if self._multi else None

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.signal_name = signal.Signals(signum).name
            print(f"{self.signal_name}: saving a checkpoint after the current step, then stopping",
                  file=sys.stderr, flush=True)
        self.requested = True

    def install(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    __enter__ = install

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def should_stop(self) -> bool:
        if not self._multi:
            return self.requested
        p = self._placement
        local = len(p.sharded.addressable_devices)
        flags = np.full((local,), int(self.requested), np.int32)
        agreed = self._reduce(jax.make_array_from_process_local_data(p.sharded, flags, (p.size,)))
        previous, self._pending = self._pending, agreed
        return previous is not None and bool(previous)

    def stop_after_loop(self) -> bool:
        """After the last step: did a signal arrive (on any process)? Every process agrees."""
        if not self._multi:
            return self.requested
        p = self._placement
        flags = np.full((len(p.sharded.addressable_devices),), int(self.requested), np.int32)
        return bool(self._reduce(jax.make_array_from_process_local_data(p.sharded, flags,
                                                                        (p.size,))))

    def message(self, step: int, workdir: Any) -> str:
        return (f"training stopped by {self.signal_name or 'a signal'} after step {step}; "
                f"checkpoint {step} is saved in {workdir}/checkpoints; re-run the same "
                f"command to resume")
