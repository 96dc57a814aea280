"""The public API: what users reach for is exported, nothing private or internal is, and the import paths that
moved keep working for one release with a DeprecationWarning."""
import importlib
import sys
import types

import pytest

PACKAGES = ["circuits", "circuits.noise", "circuits.study", "neuro_lpc", "neuro_lpc.metrics"]


def _stdlib(module: types.ModuleType) -> bool:
    return module.__name__.split(".")[0] in sys.stdlib_module_names


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_namespace_holds_no_private_names_and_no_stdlib_modules(package):
    """``__all__`` lists only public names that exist; the namespace has no ``_x`` object imported from a
    submodule (private submodules themselves and dunders aside), no stdlib module under a public name, and no module
    but its own submodules (no numpy / torch aliases)."""
    mod = importlib.import_module(package)
    assert all(not n.startswith("_") for n in mod.__all__), [n for n in mod.__all__ if n.startswith("_")]
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, missing
    private = [n for n, v in vars(mod).items() if n.startswith("_") and not n.startswith("__")
               and not isinstance(v, types.ModuleType)]
    assert not private, f"{package} exports private names {private}"
    stdlib = [n for n, v in vars(mod).items() if isinstance(v, types.ModuleType) and not n.startswith("_")
              and _stdlib(v)]
    assert not stdlib, f"{package} exports stdlib modules {stdlib}"
    foreign = [n for n, v in vars(mod).items() if isinstance(v, types.ModuleType)
               and not v.__name__.startswith(package + ".")]
    assert not foreign, f"{package} holds modules that are not its own submodules: {foreign}"


def test_circuits_exports_what_users_reach_for_and_not_the_internals():
    import circuits
    for name in ("Circuit", "CircuitConfig", "CircuitTrainer", "CircuitTrainConfig", "simulate_graphed",
                 "stable_dt_bound", "LEARNING_MODES", "AnalogArray", "NoiseModel", "PRESETS", "TIMESCALES"):
        assert name in circuits.__all__, name
    from circuits.fast import simulate_graphed
    from circuits.learn import CircuitTrainer
    from circuits.stability import stable_dt_bound
    assert (circuits.simulate_graphed, circuits.CircuitTrainer, circuits.stable_dt_bound) == (
        simulate_graphed, CircuitTrainer, stable_dt_bound)
    for internal in ("CircuitRun", "OUBank", "BoundCircuit", "KERNELS"):
        assert internal not in circuits.__all__


@pytest.mark.parametrize("old, new", [
    ("circuits:CircuitRun", "circuits.run:CircuitRun"),
    ("circuits:OUBank", "circuits.noise.units:OUBank"),
    ("circuits.circuit:CircuitRun", "circuits.run:CircuitRun"),
    ("circuits.integrate:stable_dt_bound", "circuits.stability:stable_dt_bound"),
    ("circuits.integrate:check_step_size", "circuits.stability:check_step_size"),
])
def test_moved_names_warn_and_are_the_same_object(old, new):
    (om, oa), (nm, na) = old.split(":"), new.split(":")
    module = importlib.import_module(om)
    with pytest.warns(DeprecationWarning, match=oa):
        got = getattr(module, oa)
    assert got is getattr(importlib.import_module(nm), na)


def test_our_own_imports_raise_no_deprecation_warning():
    """Project code imports the new paths only: importing every package under -W error::DeprecationWarning in a
    fresh interpreter succeeds."""
    import subprocess
    code = "import " + ", ".join(PACKAGES + ["circuits.analysis", "circuits.brian", "circuits.sweep", "circuits.cli"])
    r = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
