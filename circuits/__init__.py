"""circuits: Langevin predictive coding as a continuous-time stochastic circuit (DESIGN.md section 3).

    from circuits import Circuit, CircuitConfig
    traj = Circuit(model, CircuitConfig(noise="analog")).simulate(x, steps=10_000, record_every=10)

Modules: ``circuit`` (Circuit), ``config`` (CircuitConfig), ``run`` (CircuitRun: the state and the
units' equations of one run), ``kernels_linear`` (kernels of an ``nn.Linear`` decoder), ``weights``
(forward / feedback weights with the noise hooks), ``noise`` (noise sources and presets),
``timescales`` (time-constant models), ``integrate`` (Euler-Maruyama and the torchdiffeq reference),
``analysis`` (linear-Gaussian theory and diagnostics).
"""
from .circuit import Circuit
from .config import CircuitConfig
from .noise import NOISE_SOURCES, PRESETS, NoiseModel, NoiseSource, OUBank
from .run import CircuitRun
from .timescales import TIMESCALES, TimescaleModel, make_timescales

__all__ = ["Circuit", "CircuitConfig", "CircuitRun", "NoiseModel", "NoiseSource", "OUBank", "NOISE_SOURCES", "PRESETS",
           "TIMESCALES", "TimescaleModel", "make_timescales"]
