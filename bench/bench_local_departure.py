#!/usr/bin/env python
"""in-memory-local against its plain-SGD digital twin on the built-in conv decoder, per device (issue 17).

Rows and the departure measure: docs/learning_modes.md ("Learning in memory, locally").

Usage: python bench/bench_local_departure.py OUT.json   (30 batches of 16, P = 20, lr 3e-5; ~5 min on one CPU thread)
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from circuits.learn import CircuitTrainConfig, CircuitTrainer  # noqa: E402
from circuits.noise.arrays import AIHWKIT_PULSED_SPREADS  # noqa: E402
from neuro_lpc.train import build_model  # noqa: E402
from neuro_lpc.data import load_dataset  # noqa: E402

train, _, _ = load_dataset("animal-mnist")
NB, B, P, LR = 30, 16, 20, 3e-5
IDEAL = {"type": "pulsed", "dw_min": 1e-9, "dw_min_dtod": 0.0, "dw_min_std": 0.0}
ROWS = {
    "digital twin (plain SGD)": dict(learning="hardware-aware", noise="ideal"),
    "local, SGD limit (expected counts, dw_min 1e-9)": dict(learning="in-memory-local", pulse_update={"expected": True},
                                                          noise={"preset": "ideal", "sources": [IDEAL]}),
    "local, constant step dw_min 1e-3, no spread (poisson)": dict(learning="in-memory-local", pulse_update={"trains": "poisson"},
        noise={"preset": "ideal", "sources": [{"type": "pulsed", "dw_min_dtod": 0.0, "dw_min_std": 0.0}]}),
    "local, aihwkit PulsedDevice + d2d spreads (poisson)": dict(learning="in-memory-local", pulse_update={"trains": "poisson"},
        noise={"preset": "ideal", "sources": [{"type": "pulsed", **AIHWKIT_PULSED_SPREADS}]}),
    "local, asymmetric up_down 0.3 (poisson)": dict(learning="in-memory-local", pulse_update={"trains": "poisson"},
        noise={"preset": "ideal", "sources": [{"type": "pulsed", "up_down": 0.3}]}),
    "local, soft bounds (poisson)": dict(learning="in-memory-local", pulse_update={"trains": "poisson"},
        noise={"preset": "ideal", "sources": [{"type": "pulsed", "kind": "soft_bounds"}]}),
}


class Both:
    """The twin's optimiser: plain SGD on the model (as the local rule), Adam on the encoder (as in-memory-local)."""
    def __init__(self, a, b):
        self.a, self.b, self.param_groups = a, b, a.param_groups + b.param_groups
    def step(self):
        self.a.step(); self.b.step()
    def zero_grad(self, set_to_none=True):
        self.a.zero_grad(set_to_none=set_to_none); self.b.zero_grad(set_to_none=set_to_none)
    def state_dict(self):
        return {"a": self.a.state_dict(), "b": self.b.state_dict()}



res = {}
twin = None
for name, kw in ROWS.items():
    cfg = CircuitTrainConfig(batch_size=B, langevin_steps=P, lr=LR, seed=0, device="cpu", sample_grid=0, **kw)
    torch.manual_seed(0)
    m, e = build_model(cfg, 28, 1)
    tr = CircuitTrainer(m, e, cfg)
    W0 = {n: p.detach().clone() for n, p in m.decoder.named_parameters()}
    if kw["learning"] == "hardware-aware":
        tr.optimizer = Both(torch.optim.SGD(list(m.parameters()), lr=LR), torch.optim.Adam(list(e.parameters()), lr=LR))
    losses, t = [], []
    for k in range(NB):
        x = train.images[B * k:B * (k + 1)].float()
        t0 = time.perf_counter()
        losses.append(float(tr.train_step(x)["loss_per_dim"]))
        t.append(time.perf_counter() - t0)
    W = {n: p.detach().clone() for n, p in m.decoder.named_parameters()}
    if twin is None:
        twin = (W, W0)
        dep = 0.0
    else:   # departure from the twin's weights, relative to how far the twin moved (all decoder tensors together)
        num = sum(float((W[n] - twin[0][n]).pow(2).sum()) for n in W)
        den = sum(float((twin[0][n] - twin[1][n]).pow(2).sum()) for n in W)
        dep = (num / den) ** 0.5
    moved = sum(float((W[n] - W0[n]).pow(2).sum()) for n in W) ** 0.5 / sum(float(W0[n].pow(2).sum()) for n in W) ** 0.5
    res[name] = dict(first3=np.mean(losses[1:4]), last3=np.mean(losses[-3:]), s_per_step=np.median(t[1:]),
                     departure=dep, moved=moved)
    print(f"{name}: loss/dim batches 2-4 {res[name]['first3']:.4f} -> last 3 {res[name]['last3']:.4f}; "
          f"decoder moved {moved:.4f}, departure from the twin {dep:.3f}; {res[name]['s_per_step']:.2f} s/step", flush=True)
json.dump(res, open(sys.argv[1], "w"), indent=1)
