"""neuro_lpc.networks and the deprecated neuro_lpc.models shim."""
import importlib
import sys

import pytest

import neuro_lpc.networks as networks


def test_the_old_module_warns_and_gives_the_same_objects():
    sys.modules.pop("neuro_lpc.models", None)
    with pytest.warns(DeprecationWarning, match="neuro_lpc.models is deprecated; use neuro_lpc.networks"):
        models = importlib.import_module("neuro_lpc.models")
    for name in models.__all__:
        assert getattr(models, name) is getattr(networks, name)
    assert set(models.__all__) == set(networks.__all__)
