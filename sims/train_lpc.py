#!/usr/bin/env python
"""Full-dataset training with discrete Langevin predictive coding (Algorithm 1) or the VAE baseline.

    python sims/train_lpc.py --method lpc|vae --dataset NAME --epochs N --out DIR [--resume] [--config FILE]
        [--dynamics overdamped|nonreversible|underdamped] [--skew random|optimal] [--skew-scale S]
        [--friction F] [--mass M]        (the sampler family: docs/dynamics.md)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neuro_lpc.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
