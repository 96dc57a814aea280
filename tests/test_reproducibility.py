"""Reproducibility (issue 10, section 5): --seed fixes the initial weights, and a run is reproduced bit for
bit (CPU) from its config.json alone: the same command twice, and a rerun with --config, give equal
parameters and first-step losses; another seed gives other weights (build_model)."""
import json

import pytest
import torch

from neuro_lpc import TrainConfig
from neuro_lpc.train import build_model, read_checkpoint


def first_loss(out):
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def weights(out):
    ck = read_checkpoint(out / "checkpoint.pt")
    return {**{"m." + k: v for k, v in ck["model"].items()}, **{"e." + k: v for k, v in ck["encoder"].items()}}


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert first_loss(a) == first_loss(b)


def test_build_model_draws_the_initial_weights_from_the_seed_and_leaves_the_global_stream_alone():
    state = torch.get_rng_state()
    a, _ = build_model(TrainConfig(seed=1), 28, 1)
    torch.rand(5)                                        # whatever happens to the global stream in between
    b, _ = build_model(TrainConfig(seed=1), 28, 1)
    c, _ = build_model(TrainConfig(seed=2), 28, 1)
    wa, wb, wc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["decoder.fc.weight"], wc["decoder.fc.weight"])
    torch.set_rng_state(state)
    torch.rand(5)
    after = torch.rand(3)
    torch.set_rng_state(state)
    build_model(TrainConfig(seed=7), 28, 1)
    torch.rand(5)
    assert torch.equal(torch.rand(3), after)              # construction did not consume the global stream


@pytest.mark.parametrize("cli", ["lpc", "circuit"])
def test_the_same_command_twice_and_its_config_json_give_the_same_run(tmp_path, cli):
    if cli == "lpc":
        from neuro_lpc.cli import train_main
        extra = ["--method", "lpc", "--langevin-steps", "2", "--prior-init-batches", "1"]
    else:
        from circuits.cli import train_main
        extra = ["--presentation-steps", "2", "--noise", "thermal", "--prior-init-batches", "1"]
    args = ["--batch-size", "8", "--max-batches-per-epoch", "1", "--epochs", "1", "--sample-grid", "0", "--seed", "11",
            "--device", "cpu", "--quiet", *extra]
    torch.manual_seed(123)                                # the global stream differs between the two commands
    assert train_main(["--out", str(tmp_path / "a"), *args]) == 0
    torch.manual_seed(456)
    assert train_main(["--out", str(tmp_path / "b"), *args]) == 0
    assert_same_run(tmp_path / "a", tmp_path / "b")
    assert train_main(["--out", str(tmp_path / "c"), "--config", str(tmp_path / "a" / "config.json"), "--quiet"]) == 0
    assert_same_run(tmp_path / "a", tmp_path / "c")
