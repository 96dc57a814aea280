"""Named noise models: ``none``, ``ideal``, ``thermal``, ``analog``, ``cortical`` (plain dicts, no imports of sources)."""
from __future__ import annotations

import math

PRESETS: dict[str, dict] = {
    # T = 0 and no noise: the circuit is an ODE (classic predictive coding, a gradient flow)
    "none": {"temperature": 0.0, "sources": []},
    # intrinsic Langevin noise only (T = 1): the circuit samples (the posterior when tau_e -> 0)
    "ideal": {"temperature": 1.0, "sources": []},
    "thermal": {"temperature": 1.0, "sources": [{"type": "thermal"}]},
    # a realistic analog in-memory-computing mix (aihwkit PCM, CrossSim, rockpool figures)
    "analog": {
        "temperature": 1.0,
        "timescales": {"name": "mismatch", "sigma": 0.1},
        "sources": [
            {"type": "weight_programming", "model": "pcm"},
            {"type": "drift", "t_start": 3600.0, "compensate": True},
            {"type": "weight_read", "std": 0.0175},
            {"type": "feedback_mismatch", "std": 0.05},
            {"type": "mismatch", "gain_std": 0.1, "offset_std": 0.02, "sites": ["value", "error"]},
            {"type": "quantisation", "site": "value", "bits": 7},
            {"type": "quantisation", "site": "prediction", "bits": 9},
            {"type": "quantisation", "site": "error", "bits": 7},
            {"type": "thermal", "value_std": 0.05, "error_std": 0.05},
            {"type": "flicker", "value_std": 0.05},
            {"type": "saturation", "sites": ["value"], "bound": 4.0, "mode": "clip", "on": "state"},
        ],
    },
    # cortex: Poisson-like variability and heterogeneous time constants of 10-20 ms
    "cortical": {
        "temperature": 1.0,
        "timescales": {"name": "heterogeneous", "tau_z": math.sqrt(0.01 * 0.02), "tau_e": math.sqrt(0.01 * 0.02),
                       "sigma": math.log(2) / 4, "low": 0.01, "high": 0.02},
        "sources": [{"type": "shot", "value_fano": 0.15, "error_fano": 0.15}],
    },
}
