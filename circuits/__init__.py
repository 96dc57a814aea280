"""circuits: Langevin predictive coding as a continuous-time stochastic circuit (DESIGN.md section 3).

    from circuits import Circuit, CircuitConfig
    traj = Circuit(model, CircuitConfig(noise="analog")).simulate(x, steps=10_000, record_every=10)

What users reach for is exported here: the circuit and its config, training on it (``CircuitTrainer``, the
``LEARNING_MODES``), the CUDA-graph fast path (``simulate_graphed``), the dt check (``stable_dt_bound``), the noise
models and analog arrays, the time-constant models.  The layers, lowest first (docs/design.md; each module imports
only from those below it): ``_checks``; ``timescales``, ``noise``, ``config``; ``units`` (each unit's equation, once);
``theory`` (linear-circuit matrices and stationary laws); ``bound`` (the circuit bound to a model); ``run_weights``,
``kernels_linear``, ``kernels_general``, ``run_records``, ``run`` (one run's state and the ``KERNELS`` table);
``stability``; ``_loop``, ``integrate``, ``fast`` (the loops); ``circuit``; then ``modes``, ``learn``,
``diagnostics``, ``analysis`` and the applications ``plots``, ``sweep``, ``cli``, ``study``, ``brian``.
"""
from .circuit import Circuit
from .config import CircuitConfig
from .fast import simulate_graphed
from .learn import CircuitTrainConfig, CircuitTrainer, load_circuit_trained
from .modes import LEARNING_MODES
from .noise import NOISE_SOURCES, PRESETS, NoiseModel, NoiseSource
from .noise.arrays import AnalogArray
from .stability import check_step_size, stable_dt_bound
from .timescales import TIMESCALES, TimescaleModel, make_timescales

__all__ = ["Circuit", "CircuitConfig", "CircuitTrainConfig", "CircuitTrainer", "load_circuit_trained", "LEARNING_MODES",
           "simulate_graphed", "stable_dt_bound", "check_step_size", "AnalogArray", "NoiseModel", "NoiseSource",
           "NOISE_SOURCES", "PRESETS", "TIMESCALES", "TimescaleModel", "make_timescales"]


def __getattr__(name):
    """Internal names this package exported before: one release of grace with a DeprecationWarning, then gone."""
    moved = {"CircuitRun": ("circuits.run", "CircuitRun"), "OUBank": ("circuits.noise.units", "OUBank")}
    if name in moved:
        import importlib
        import warnings
        module, attr = moved[name]
        warnings.warn(f"circuits.{name} is internal and no longer exported; import it from {module} "
                      f"(it will be removed from this namespace)", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'circuits' has no attribute {name!r}")
