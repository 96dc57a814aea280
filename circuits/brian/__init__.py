"""The LPC circuit in Brian2: a second simulator of the same SDE, and a standalone export.

* :func:`simulate_brian2` (``circuits.brian.simulate``): ``Circuit(model, config).simulate`` in Brian2, same
  CircuitConfig, same ``Trajectory``; :class:`BrianUnsupported` names what Brian2 cannot express
  (``circuits.brian.spec``); the network itself is ``circuits.brian.network`` (numpy + brian2 only).
* :func:`export_brian2` (``circuits.brian.export``): a runnable Brian2 script + .npz of a circuit
  (``--device cpp_standalone`` to compile it).
* ``circuits.brian.compare``: the agreement table of ``sims/compare_brian2.py``.
* the original linear cross-check from raw matrices (``circuits.brian.linear``):
  :func:`simulate_linear_circuit_brian`, :func:`build_linear_circuit_network`, :func:`linear_circuit_from_model`.

See docs/brian2.md.
"""
from .export import export_brian2
from .linear import (BrianCircuitTrajectory, build_linear_circuit_network, linear_circuit_from_model,
                     simulate_linear_circuit_brian)
from .simulate import TARGETS, simulate_brian2
from .spec import SUPPORTED_SOURCES, BrianUnsupported, circuit_spec

__all__ = ["simulate_brian2", "export_brian2", "BrianUnsupported", "circuit_spec", "SUPPORTED_SOURCES", "TARGETS",
           "BrianCircuitTrajectory", "simulate_linear_circuit_brian", "build_linear_circuit_network",
           "linear_circuit_from_model"]
