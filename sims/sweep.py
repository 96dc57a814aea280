#!/usr/bin/env python
"""Sweeps: noise amplitude / temperature, step size with and without preconditioning (Fig. 4), time constants.

    python sims/sweep.py [--sweep temperature noise step tau] [--quick] [--train] [--out runs/sweep]
    python sims/sweep.py --sweep dynamics [--dyn-steps 20000] [--train --seeds 2]   # sampler families (docs/dynamics.md)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuits.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
