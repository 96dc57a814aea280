#!/usr/bin/env python
"""Circuit vs discrete LPC on the same data, with a report and figures (the project's main job).

    python sims/run_circuit.py --noise analog            # ~5-10 min on 2 CPU cores; GPU when present
    python sims/run_circuit.py --noise ideal --quick     # <= 2 min
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from circuits.cli import study_main as main  # noqa: E402  (circuits.study.main, errors as one line)

if __name__ == "__main__":
    sys.exit(main())
