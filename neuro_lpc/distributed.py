"""Data-parallel training over several processes (GPUs, nodes) launched by ``torchrun``.

    torchrun --nproc_per_node=N sims/train_lpc.py ...           # one node, N GPUs (or N CPU processes)
    torchrun --nnodes=M --node_rank=K --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT --nproc_per_node=N ...

What is split and what is shared (docs/scale.md):

* the data: every optimiser step consumes one *global* batch of ``config.batch_size`` images, split over
  the W ranks (``config.batch_size`` must be divisible by W; each rank sees b = batch_size / W images).
  :class:`EpochShardSampler` (a ``DistributedSampler``; ``set_epoch`` is called every epoch) gives rank r
  the rows r, r + W, r + 2W, ... of exactly the global batches a single process would draw
  (``neuro_lpc.data.make_loader`` with the same seed).
* latent inference is local: every rank runs its own Langevin sampler (or circuit) on its b chains;
  chains never talk to each other, so nothing is exchanged during the T steps.
* the parameter gradient is all-reduced once per optimiser step (one flat buffer, averaged over the
  ranks). Every loss of a trainer is a mean over the rank's b samples (eq. 8: -(1/(b T)) sum_b sum_t
  log p; the encoder objectives: means over the batch), so the average over W equal shards is the mean
  over the global batch: the single-process gradient. Clipping and Adam then run identically on every
  rank, so the parameters stay equal without a broadcast after the first one.
* randomness: every rank holds the *same* generator (seeded by ``config.seed``) and draws the noise of
  the whole global batch, keeping its own rows (:func:`shard_randn`): the Langevin / Euler-Maruyama
  noise, the prior and encoder warm starts and the reparameterised samples of the warm-start objective
  see, sample by sample, the numbers a single process would draw. A W-rank run is therefore the
  single-process run over the same global batch up to the summation order of the all-reduce (float
  rounding, tested), and a rank's generator state is everyone's, so rank 0's checkpoint resumes all.
  The cost: each rank draws W times the noise it uses, (W b) x d normals per step for d = 40 latents,
  negligible beside a decoder pass.
* writes: config.json, metrics.jsonl, checkpoints, sample grids and TensorBoard logs come from rank 0
  only; the other ranks read the checkpoint for ``--resume`` (the output folder must be on a file system
  every node sees). Metrics are averaged over the ranks before rank 0 logs them.
* failure: a rank whose chain diverges tells the others through a flag reduced before the gradient
  all-reduce, so every rank stops with the same one-line error instead of waiting on a collective.

Why not ``torch.nn.parallel.DistributedDataParallel``: LPC accumulates the decoder gradient over T
backward passes per optimiser step (one per Langevin step, not through a module forward DDP could hook),
so DDP's per-backward reducer would either all-reduce T times or need ``no_sync`` and a forward it never
sees. One explicit all-reduce of the accumulated gradient is what DDP would do at the last backward.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "init_from_env", "current", "shutdown", "batch_shard", "shard_randn", "shard_rand",
           "EpochShardSampler", "global_order", "distributed_trainer_class", "all_reduce_mean", "make_trainer",
           "is_main_process"]

_CTX: "DistContext | None" = None
_SHARD: tuple[int, int] | None = None    # (rank, world_size) while a rank computes its shard of a global batch


@dataclass(frozen=True)
class DistContext:
    """The process group this process belongs to."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {v!r}") from None


def init_from_env(device: str = "auto") -> DistContext | None:
    """Join the process group described by torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); None when not launched by torchrun or with a single process.

    Backend: NCCL when the run uses CUDA (rank on ``cuda:LOCAL_RANK``), gloo on CPU. ``device`` is the
    config's device ("auto", "cpu", "cuda"); returns the context, also kept as :func:`current`.
    """
    global _CTX
    world = _env_int("WORLD_SIZE")
    if world is None or world == 1:
        return None
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank is None or not 0 <= rank < world:
        raise ValueError(f"RANK must be an integer in [0, WORLD_SIZE={world}), got {os.environ.get('RANK')!r}")
    local = rank if local is None else local
    import torch.distributed as dist

    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} CUDA devices "
                             f"(use --nproc_per_node <= the number of GPUs)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        import atexit

        atexit.register(shutdown)
    _CTX = DistContext(rank=rank, world_size=world, local_rank=local, backend=backend, device=dev)
    return _CTX


def current() -> DistContext | None:
    """The context set by :func:`init_from_env` (or :func:`set_context`), else None."""
    return _CTX


def set_context(ctx: DistContext | None) -> None:
    """Use an already initialised process group (tests, custom launchers)."""
    global _CTX
    _CTX = ctx


def shutdown() -> None:
    global _CTX
    if _CTX is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _CTX = None


# ------------------------------------------------------------------------------------ noise ----

@contextlib.contextmanager
def batch_shard(rank: int, world_size: int):
    """While active, :func:`shard_randn` draws the global batch's noise and keeps rows rank::world_size."""
    global _SHARD
    if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    prev, _SHARD = _SHARD, (rank, world_size)
    try:
        yield
    finally:
        _SHARD = prev


def shard_randn(shape, generator=None, device=None, dtype=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.randn(shape)`` for the rows (dim 0 = samples) of this rank's shard of the global batch.

    Outside :func:`batch_shard` (every single-process run) it *is* ``torch.randn`` (same calls, same
    numbers). Inside, it draws (W shape[0], ...) normals from the generator -- what a single process
    draws for the global batch -- and returns rows rank, rank + W, ... (the rows of this rank's samples
    in the global batch, see :class:`EpochShardSampler`).
    """
    shape = tuple(shape)
    if _SHARD is None or _SHARD[1] == 1:
        if out is not None:
            return torch.randn(shape, generator=generator, out=out)
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    rank, world = _SHARD
    if out is not None:
        device, dtype = out.device, out.dtype
    full = torch.randn((shape[0] * world, *shape[1:]), generator=generator, device=device, dtype=dtype)
    mine = full[rank::world]
    if out is not None:
        return out.copy_(mine)
    return mine.contiguous()


def shard_rand(shape, generator=None, device=None, dtype=None) -> torch.Tensor:
    """``torch.rand`` (uniform) for this rank's rows, as :func:`shard_randn` does for normals."""
    shape = tuple(shape)
    if _SHARD is None or _SHARD[1] == 1:
        return torch.rand(shape, generator=generator, device=device, dtype=dtype)
    rank, world = _SHARD
    full = torch.rand((shape[0] * world, *shape[1:]), generator=generator, device=device, dtype=dtype)
    return full[rank::world].contiguous()


# ------------------------------------------------------------------------------------- data ----

class _Index(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def global_order(n: int, batch_size: int, seed: int) -> list[int]:
    """The sample order of one epoch of ``neuro_lpc.data.make_loader(dataset, batch_size, shuffle=True,
    seed=seed)`` (drop_last: the complete global batches only), computed by running that loader on indices."""
    from .data import make_loader

    return [int(i) for b in make_loader(_Index(n), batch_size, shuffle=True, seed=seed) for i in b]


class EpochShardSampler(torch.utils.data.DistributedSampler):
    """This rank's samples of an epoch: rows rank::W of the single-process order (:func:`global_order`).

    ``seed`` + ``epoch`` (``set_epoch``) is the single-process loader's seed of that epoch; ``batch_size``
    is the global batch. With per-rank batches of b = batch_size / W consecutive samples of this sampler,
    rank r's k-th batch holds the rows i W + r (i < b) of the single-process k-th batch.
    """

    def __init__(self, dataset, batch_size: int, num_replicas: int, rank: int, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        if batch_size % num_replicas:
            raise ValueError(f"the global batch size {batch_size} must be divisible by the number of processes "
                             f"{num_replicas}")
        self.batch_size = batch_size
        self.num_samples = (len(dataset) // batch_size) * (batch_size // num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        order = global_order(len(self.dataset), self.batch_size, self.seed + self.epoch)
        return iter(order[self.rank::self.num_replicas])

    def __len__(self):
        return self.num_samples


# ----------------------------------------------------------------------------- collectives ----

def all_reduce_mean(tensors: list[torch.Tensor], world_size: int) -> None:
    """Average tensors over the ranks in place with one all-reduce of a flat buffer."""
    import torch.distributed as dist

    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(world_size)
    i = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[i:i + n].view_as(t))
        i += n


class DistributedMixin:
    """Turns a ``neuro_lpc.train.Trainer`` subclass into its data-parallel form (module docstring).

    Overrides only: construction (broadcast of the initial parameters from rank 0), the epoch loader
    (:class:`EpochShardSampler`), ``train_step`` (the noise shard, a failure flag, metrics averaged over
    ranks), ``_clip_and_step`` (gradient all-reduce first) and ``fit`` (writes from rank 0 only).
    """

    def __init__(self, *args, dist_context: DistContext | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        ctx = dist_context or current()
        if ctx is None:
            raise ValueError("a distributed trainer needs a process group (launch with torchrun)")
        self.dist = ctx
        W = ctx.world_size
        if self.config.batch_size % W:
            raise ValueError(f"batch_size={self.config.batch_size} (the global batch) must be divisible by the "
                             f"number of processes {W}")
        _check_shardable_noise(self)
        import torch.distributed as dist

        with torch.no_grad():
            for t in [*self.model.state_dict().values(), *self.encoder.state_dict().values()]:
                if t.is_floating_point() or t.dtype in (torch.int64, torch.int32):
                    dist.broadcast(t, src=0)

    # -- data
    def make_epoch_loader(self, train_dataset):
        from torch.utils.data import DataLoader

        sampler = EpochShardSampler(train_dataset, self.config.batch_size, self.dist.world_size, self.dist.rank,
                                    seed=self.config.seed * 100003)
        sampler.set_epoch(self.epoch)
        if len(sampler) == 0:
            raise ValueError(f"batch_size {self.config.batch_size} exceeds the data set size {len(train_dataset)}")
        return DataLoader(train_dataset, batch_size=self.config.batch_size // self.dist.world_size, sampler=sampler,
                          drop_last=True, num_workers=0)

    # -- one step
    def _reduce_flags(self, err) -> None:
        """One small all-reduce per step, before the gradient's: [first failing rank + 1, any rank's SIGINT].

        Every rank reaches it exactly once per step: a healthy rank from ``_clip_and_step`` (after its chains,
        before the gradient all-reduce), a rank whose chains diverged from ``train_step``'s handler. A failure
        anywhere then stops every rank with an error instead of leaving the others waiting in a collective."""
        import torch.distributed as dist

        from .errors import DivergenceError

        flag = torch.tensor([0.0 if err is None else 1.0 + self.dist.rank,
                             1.0 if getattr(self, "_interrupt", False) else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self._flags_reduced = True
        failed, self._dist_stop = flag.tolist()
        if failed > 0:
            if err is not None:
                raise err
            raise DivergenceError(f"rank {int(failed) - 1} diverged (its error is printed by that rank)")

    def train_step(self, x):
        from .errors import DivergenceError

        self._flags_reduced = False
        with batch_shard(self.dist.rank, self.dist.world_size):
            try:
                metrics = super().train_step(x)
            except DivergenceError as e:
                if self._flags_reduced:     # failed after the step's collectives: every rank saw the same state
                    raise
                self._reduce_flags(e)       # raises e, after telling the other ranks
        names = sorted(metrics)
        vals = [torch.as_tensor(metrics[k], device=self.device, dtype=torch.float64).reshape(1) for k in names]
        buf = torch.cat(vals)
        all_reduce_mean([buf], self.dist.world_size)
        return {k: buf[i] for i, k in enumerate(names)}

    def stop_requested(self) -> bool:
        """A SIGINT on any rank stops every rank after the same step (reduced with the step's failure flag)."""
        return bool(getattr(self, "_dist_stop", False))

    def _clip_and_step(self) -> None:
        self._reduce_flags(None)            # this rank's chains are fine; raises if another rank's are not
        params = [p for p in list(self.model.parameters()) + list(self.encoder.parameters()) if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        all_reduce_mean([p.grad for p in params], self.dist.world_size)
        super()._clip_and_step()

    # -- writes from rank 0 only
    def fit(self, train_dataset, epochs=None, resume: bool = False, progress: bool = True):
        ckpt = self.out_dir / "checkpoint.pt" if self.out_dir is not None else None
        if resume:
            # every rank must see the same answer to "is there a checkpoint?" (else some would resume, others not)
            import torch.distributed as dist

            from .errors import CheckpointError

            have = ckpt is not None and ckpt.exists()
            seen = torch.tensor([1.0 if have else 0.0, 0.0 if have else 1.0], device=self.device)
            dist.all_reduce(seen, op=dist.ReduceOp.MAX)
            if seen[0] > 0 and seen[1] > 0:
                raise CheckpointError(f"--resume: {ckpt} exists on some ranks only (rank {self.dist.rank} "
                                      f"{'sees' if have else 'does not see'} it); the output folder must be on a file "
                                      f"system every node sees")
        if self.dist.is_main:
            return super().fit(train_dataset, epochs=epochs, resume=resume, progress=progress)
        if resume and ckpt is not None and ckpt.exists():
            self.load_checkpoint(ckpt)            # the run's state (rank 0 checks its config against the run's)
        self.out_dir = None                       # a fresh start when there is none yet (rank 0 prints the note)
        return super().fit(train_dataset, epochs=epochs, resume=False, progress=False)


# circuit noise sources whose per-chain draws are not yet taken through shard_randn: with one generator on every
# rank they would repeat the same numbers on every shard (correlated chains), so data-parallel runs refuse them
UNSHARDED_SOURCES = ("flicker",)   # its 1/f bank also persists per chain across presentations (checkpointed by rank 0)


def _check_shardable_noise(trainer) -> None:
    cc = getattr(trainer, "circuit_config", None)
    if cc is None:
        return
    bad = sorted({s.type for s in cc.noise_model().sources
                  if s.type in UNSHARDED_SOURCES})
    if bad:
        raise ValueError(f"data-parallel circuit training does not shard the per-chain draws of the noise source(s) "
                         f"{bad} yet (every rank would repeat the same noise); train them in one process "
                         f"(docs/scale.md)")


_CLASSES: dict[type, type] = {}


def distributed_trainer_class(cls: type) -> type:
    """``DistributedMixin`` + ``cls`` (cached), e.g. ``distributed_trainer_class(LPCTrainer)``."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type("Distributed" + cls.__name__, (DistributedMixin, cls), {"__doc__": cls.__doc__})
    return _CLASSES[cls]


def make_trainer(cls: type, model, encoder, config, out_dir=None):
    """``cls(model, encoder, config, out_dir=out_dir)`` in a single process; under torchrun (WORLD_SIZE > 1)
    the process group is joined and the data-parallel form of ``cls`` is returned (the CLIs' entry point)."""
    ctx = init_from_env(config.device)
    if ctx is None:
        return cls(model, encoder, config, out_dir=out_dir)
    if config.device.startswith("cuda:"):
        raise ValueError(f"device {config.device!r} under torchrun: use --device cuda or auto (each rank takes "
                         f"cuda:LOCAL_RANK)")
    return distributed_trainer_class(cls)(model, encoder, config, out_dir=out_dir, dist_context=ctx)


def is_main_process() -> bool:
    """True in a single process and on rank 0 (the process that prints and writes)."""
    return _CTX is None or _CTX.is_main
