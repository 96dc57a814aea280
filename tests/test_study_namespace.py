"""The ``circuits.study`` namespace (no private names, no foreign modules: tests/test_public_api.py): the sweep uses
its public ``fit_cached`` / ``train_config``, the same objects as ``circuits.study.train``'s."""
import circuits.study


def test_the_public_training_helpers_are_those_of_the_train_module():
    assert circuits.study.fit_cached is circuits.study.train.fit_cached
    assert circuits.study.train_config is circuits.study.train.train_config
