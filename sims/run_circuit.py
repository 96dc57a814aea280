#!/usr/bin/env python
"""Circuit vs discrete LPC on the same data, with a report and figures (the project's main job).

    python sims/run_circuit.py --noise analog            # budget default: 3 seeds, 5 epochs (~17 min on 2 CPU cores)
    python sims/run_circuit.py --noise ideal --quick     # a first look; models not trained enough to rank
    python sims/run_circuit.py --budget long             # 16 epochs; --budget paper: the paper's settings (a GPU)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuits.cli import study_main as main  # noqa: E402  (circuits.study.main, errors as one line)

if __name__ == "__main__":
    sys.exit(main())
