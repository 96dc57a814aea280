#!/usr/bin/env python
"""Train the decoder/encoder with circuit Langevin predictive coding (circuits.learn.CircuitTrainer).

    python sims/train_circuit.py --dataset NAME --epochs N --out DIR [--resume] [--config FILE]
        [--noise PRESET | --noise-config FILE] [--dt S] [--tau-z S] [--tau-e S] [--presentation-steps P]
        [--online --tau-theta S]

See ``python sims/train_circuit.py --help`` and docs/learning.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuits.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
