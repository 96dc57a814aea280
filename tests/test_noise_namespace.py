"""The ``circuits.noise`` namespace (its public names: tests/test_public_api.py): the deprecated module paths of the renamed modules
(``noise.devices`` -> ``noise.arrays``, ``noise.weights`` -> ``noise.weight_sources``) warn and give the same objects."""
import importlib
import sys

import pytest

import circuits.noise
from circuits.noise import arrays, weight_sources


def _fresh_import(monkeypatch, name: str):
    """Import ``name`` as if for the first time (its warning fires once per process); restored afterwards."""
    parent, _, child = name.rpartition(".")
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delattr(sys.modules[parent], child, raising=False)
    return importlib.import_module(name)


@pytest.mark.parametrize("old,new", [("circuits.noise.devices", arrays), ("circuits.noise.weights", weight_sources)])
def test_old_module_path_warns_and_reexports_the_same_objects(monkeypatch, old, new):
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use {new.__name__}"):
        shim = _fresh_import(monkeypatch, old)
    assert shim.__all__ and set(shim.__all__) <= set(new.__all__)
    for name in shim.__all__:
        assert getattr(shim, name) is getattr(new, name), name


def test_bound_sources_and_helpers_live_in_their_submodules():
    from circuits.noise.base import _add_scaled, _white_coefs  # noqa: F401
    from circuits.noise.units import _Flicker, _Shot, _Thermal, OUBank  # noqa: F401

    assert circuits.noise.OUBank is OUBank          # the 1/f OU bank: a building block for a user's own source
