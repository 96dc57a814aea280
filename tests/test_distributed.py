"""Data-parallel training (neuro_lpc.distributed): W ranks over a global batch = one process over it.

The equivalence test launches 2 gloo processes with torchrun (``python -m torch.distributed.run
--standalone``) running this file as a worker, and compares the parameters after 6 optimiser steps
(2 epochs, the second resumed from rank 0's checkpoint on both ranks; prior and encoder warm starts,
Jeffreys objective, preconditioned chains, float64) with a straight single-process run of the same config: equal to float64 rounding (the all-reduce sums in another order).
It fails if the data split, the noise rows, the loss normalisation or the gradient reduction are wrong
(any of them changes the parameters at O(1e-3), not 1e-12).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuro_lpc import GaussianLikelihood, GenerativeModel, TrainConfig  # noqa: E402
from neuro_lpc.distributed import EpochShardSampler, batch_shard, global_order, shard_randn  # noqa: E402
from neuro_lpc.train import LPCTrainer  # noqa: E402

N_DATA, OBS, LATENT = 40, 12, 3


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(OBS, 2 * LATENT)

    def forward(self, x):
        h = self.lin(x)
        return h[:, :LATENT], nn.functional.softplus(h[:, LATENT:]) + 1e-3


def _setup():
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Linear(LATENT, 16), nn.Tanh(), nn.Linear(16, OBS))
    model = GenerativeModel(dec, GaussianLikelihood(0.5, learn_sigma=True), latent_dim=LATENT).double()
    enc = _Encoder().double()
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(N_DATA, OBS, generator=g, dtype=torch.float64),
                                          torch.zeros(N_DATA))
    cfg = TrainConfig(batch_size=8, langevin_steps=5, step_size=0.05, precondition=0.25, warm_start="jeffreys",
                      prior_init_batches=2, epochs=2, max_batches_per_epoch=3, sample_grid=0, device="cpu", seed=3,
                      latent_dim=LATENT, likelihood="gaussian")
    return model, enc, data, cfg


def _circuit_setup():
    from circuits.learn import CircuitTrainConfig

    model, enc, data, cfg = _setup()
    noise = {"preset": "ideal", "sources": [{"type": "thermal"}, {"type": "weight_read", "std": 0.02},
                                            {"type": "quantisation", "site": "value", "stochastic": True}]}
    ccfg = CircuitTrainConfig(**{**cfg.to_dict(), "method": "circuit", "precondition": None, "noise": noise,
                                 "tau_e": 0.0, "langevin_steps": 4})
    return model, enc, data, ccfg


def _params(trainer):
    return {k: v.detach().clone() for k, v in [*trainer.model.state_dict().items(),
                                              *(("enc." + a, b) for a, b in trainer.encoder.state_dict().items())]}


def _worker(out: Path) -> None:
    """Run under torchrun: the data-parallel trainer on the shared config; rank 0 saves its parameters."""
    from neuro_lpc import distributed

    torch.set_num_threads(1)
    ctx = distributed.init_from_env("cpu")
    model, enc, data, cfg = _setup()
    if ctx.rank == 1:  # rank 1 starts from other weights: the broadcast from rank 0 must fix that
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    cls = distributed.distributed_trainer_class(LPCTrainer)
    first = cls(model, enc, cfg, out_dir=out / "run")
    hist = first.fit(data, epochs=1, progress=False)         # epoch 1, checkpointed by rank 0 ...
    model, enc, data, cfg = _setup()
    trainer = cls(model, enc, cfg, out_dir=out / "run")
    hist += trainer.fit(data, resume=True, progress=False)    # ... epoch 2 resumed from it on every rank
    from circuits.learn import CircuitTrainer

    model, enc, data, ccfg = _circuit_setup()
    ctrainer = distributed.distributed_trainer_class(CircuitTrainer)(model, enc, ccfg, out_dir=None)
    chist = ctrainer.fit(data, progress=False)
    # Ctrl-C on rank 1 only (its flag set during the 2nd step): both ranks stop after that same step
    from neuro_lpc.errors import TrainingInterrupted

    model, enc, data, cfg = _setup()
    itr = cls(model, enc, cfg, out_dir=out / "interrupted")
    if ctx.rank == 1:
        step = itr.train_step

        def train_step(x):
            if itr.global_step == 1:
                itr._interrupt = True           # what the SIGINT handler sets
            return step(x)
        itr.train_step = train_step
    try:
        itr.fit(data, progress=False)
        stopped = None
    except TrainingInterrupted:
        stopped = itr.global_step
    (out / f"interrupted_rank{ctx.rank}.json").write_text(json.dumps(stopped))
    if ctx.is_main:
        torch.save({"params": _params(trainer), "loss": [h["loss"] for h in hist],
                    "circuit_params": _params(ctrainer), "circuit_loss": [h["loss"] for h in chist]}, out / "ddp.pt")
    distributed.shutdown()


# --------------------------------------------------------------------------------- unit tests ----

def test_shard_randn_rows_are_the_global_draw():
    full = torch.randn((6, 4), generator=torch.Generator().manual_seed(5))
    for r in range(3):
        with batch_shard(r, 3):
            part = shard_randn((2, 4), generator=torch.Generator().manual_seed(5))
            out = shard_randn((2, 4), generator=torch.Generator().manual_seed(5), out=torch.empty(2, 4))
        assert torch.equal(part, full[r::3]) and torch.equal(out, full[r::3])
    # outside a shard it is torch.randn, bit for bit
    assert torch.equal(shard_randn((6, 4), generator=torch.Generator().manual_seed(5)), full)


def test_epoch_shards_interleave_to_the_single_process_batches():
    from neuro_lpc.data import make_loader

    ds = torch.utils.data.TensorDataset(torch.arange(23), torch.zeros(23))
    B, W = 6, 3
    for epoch in (0, 1):
        single = [b[0].tolist() for b in make_loader(ds, B, shuffle=True, seed=7 + epoch)]
        ranks = []
        for r in range(W):
            s = EpochShardSampler(ds, B, W, r, seed=7)
            s.set_epoch(epoch)
            idx = list(s)
            ranks.append([idx[k * (B // W):(k + 1) * (B // W)] for k in range(len(idx) // (B // W))])
        assert len(ranks[0]) == len(single) == 23 // B
        for k, batch in enumerate(single):
            assert [ranks[i % W][k][i // W] for i in range(B)] == batch   # row i of batch k is rank i mod W
    assert global_order(23, B, 8) != global_order(23, B, 7)           # the epoch changes the order


def test_unsharded_circuit_noise_is_refused_before_any_work():
    from circuits.learn import CircuitTrainer
    from neuro_lpc.distributed import DistContext, distributed_trainer_class

    model, enc, _data, ccfg = _circuit_setup()
    ccfg.noise = {"preset": "ideal", "sources": [{"type": "flicker"}]}
    ctx = DistContext(rank=0, world_size=2, local_rank=0, backend="gloo", device=torch.device("cpu"))
    with pytest.raises(ValueError, match="does not shard.*flicker"):
        distributed_trainer_class(CircuitTrainer)(model, enc, ccfg, dist_context=ctx)


def test_init_from_env_outside_torchrun_and_bad_env(monkeypatch):
    from neuro_lpc.distributed import init_from_env

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") is None                       # a plain single-process run
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_from_env("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match=r"RANK must be an integer in \[0, WORLD_SIZE=2\)"):
        init_from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        init_from_env("cpu")


def test_batch_not_divisible_by_world_is_refused():
    ds = torch.utils.data.TensorDataset(torch.arange(10), torch.zeros(10))
    with pytest.raises(ValueError, match="divisible"):
        EpochShardSampler(ds, 5, 2, 0)


# ----------------------------------------------------------------------- the 2-process test ----

def test_two_gloo_ranks_equal_one_process_over_the_global_batch(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).resolve()), "--worker", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    torch.set_num_threads(1)
    model, enc, data, cfg = _setup()
    single = LPCTrainer(model, enc, cfg, out_dir=tmp_path / "single")
    hist = single.fit(data, progress=False)
    ref = _params(single)
    assert len(ddp["loss"]) == len(hist) == 6
    init = _setup()[0].state_dict()
    for k, v in ref.items():
        torch.testing.assert_close(ddp["params"][k], v, rtol=1e-10, atol=1e-12, msg=k)
    moved = max(float((ref[k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-3                                  # training moved the weights: the equality is not trivial
    torch.testing.assert_close(torch.tensor(ddp["loss"]), torch.tensor([h["loss"] for h in hist]), rtol=1e-10, atol=0)
    # the circuit trainer: intrinsic, thermal unit, weight-read and stochastic-rounding noise, all per chain, sharded
    from circuits.learn import CircuitTrainer

    model, enc, data, ccfg = _circuit_setup()
    csingle = CircuitTrainer(model, enc, ccfg)
    chist = csingle.fit(data, progress=False)
    for k, v in _params(csingle).items():
        torch.testing.assert_close(ddp["circuit_params"][k], v, rtol=1e-10, atol=1e-12, msg=k)
    torch.testing.assert_close(torch.tensor(ddp["circuit_loss"]), torch.tensor([h["loss"] for h in chist]),
                               rtol=1e-10, atol=0)
    # a Ctrl-C flag on rank 1 stopped both ranks after the same step; rank 0 checkpointed there
    assert [json.loads((tmp_path / f"interrupted_rank{r}.json").read_text()) for r in (0, 1)] == [2, 2]
    from neuro_lpc.train import read_checkpoint

    assert read_checkpoint(tmp_path / "interrupted" / "checkpoint.pt")["global_step"] == 2
    # rank 0 alone wrote: one metrics line per step, one checkpoint
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(1, 7))
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def _diverging_worker() -> None:
    """Run under torchrun: rank 1's chains blow up at step 3 of the first batch; every rank must stop."""
    import dataclasses

    from neuro_lpc import distributed

    torch.set_num_threads(1)
    ctx = distributed.init_from_env("cpu")
    model, enc, data, cfg = _setup()
    trainer = distributed.distributed_trainer_class(LPCTrainer)(model, enc, cfg)
    if ctx.rank == 1:
        trainer.sampler = dataclasses.replace(trainer.sampler, step_size=1e100, precondition=None)
    trainer.fit(data, progress=False)


def test_a_diverging_rank_stops_every_rank_instead_of_hanging(tmp_path):
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).resolve()), "--diverge"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode != 0 and time.perf_counter() - t0 < 100
    assert "rank 1 diverged" in res.stderr                       # rank 0's error names the failing rank
    assert "Langevin chain diverged at step" in res.stderr      # rank 1's own error names the step


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
if __name__ == "__main__" and "--diverge" in sys.argv:
    _diverging_worker()
