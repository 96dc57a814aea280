#!/usr/bin/env python
"""Torch Euler-Maruyama vs Brian2 vs Lyapunov on one small circuit: an agreement table and both wall times.

    python sims/compare_brian2.py                               # linear, batch 64, 20k steps, numpy target
    python sims/compare_brian2.py --decoder mlp --tau-e 0       # a tanh decoder, adiabatic error units
    python sims/compare_brian2.py --target cython               # compiled Brian2 (first run compiles, ~1 min)
    python sims/compare_brian2.py --export runs/brian           # a standalone Brian2 script + .npz, then stop

The logic is ``circuits.brian.compare``; docs/brian2.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuits.brian.compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
