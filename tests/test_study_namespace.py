"""The ``circuits.study`` namespace: public names only (the sweep uses the public ``fit_cached`` / ``train_config``)."""
import types

import circuits.study


def test_namespace_has_no_private_names_and_no_stdlib_modules():
    public = {k for k in vars(circuits.study) if not k.startswith("__")}
    assert not {k for k in public if k.startswith("_")}
    assert not {k for k in circuits.study.__all__ if k.startswith("_")}
    modules = {k for k, v in vars(circuits.study).items() if isinstance(v, types.ModuleType)}
    assert all(getattr(circuits.study, k).__name__.startswith("circuits.study.") for k in modules), modules
    assert set(circuits.study.__all__) <= public
    assert circuits.study.fit_cached is circuits.study.train.fit_cached
    assert circuits.study.train_config is circuits.study.train.train_config
