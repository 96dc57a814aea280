"""Trainers, checkpoints, CLI and model shapes on the embedded data."""
import copy
import json

import pytest
import torch

from neuro_lpc import CheckpointError, ConvDecoder, ConvEncoder, TrainConfig
from neuro_lpc.cli import train_main
from neuro_lpc.data import load_dataset
from neuro_lpc.train import LPCTrainer, VAETrainer, build_model, load_trained, read_checkpoint


@pytest.fixture(scope="module")
def animal():
    train, _test, info = load_dataset("animal-mnist")
    return train, info


def small_cfg(**kw):
    base = dict(batch_size=32, langevin_steps=4, max_batches_per_epoch=4, prior_init_batches=2, sample_grid=0,
                step_size=0.1, precondition=0.25, seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_encoder_decoder_shapes(size, channels):
    dec, enc = ConvDecoder(size, channels), ConvEncoder(size, channels)
    x = dec(torch.randn(2, 40))
    assert x.shape == (2, channels, size, size)
    mean, var = enc(x)
    assert mean.shape == var.shape == (2, 40) and (var > 0).all()


def test_bad_architecture_inputs():
    with pytest.raises(ValueError, match="unsupported image size"):
        ConvDecoder(48, 3)
    with pytest.raises(ValueError, match="expects images of shape"):
        ConvEncoder(32, 3)(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="objective"):
        TrainConfig(warm_start="symmetric").validate()


@pytest.mark.parametrize("method,cls", [("lpc", LPCTrainer), ("vae", VAETrainer)])
def test_short_training_lowers_the_loss(animal, method, cls):
    train, info = animal
    cfg = small_cfg(method=method, max_batches_per_epoch=30)
    model, enc = build_model(cfg, info.image_size, info.channels)
    hist = cls(model, enc, cfg).fit(train, progress=False)
    first = sum(r["loss"] for r in hist[:5]) / 5
    last = sum(r["loss"] for r in hist[-5:]) / 5
    assert last < 0.8 * first, (first, last)


@pytest.mark.parametrize("method,cls", [("lpc", LPCTrainer), ("vae", VAETrainer)])
def test_resume_ends_at_the_same_parameters(animal, tmp_path, method, cls):
    train, info = animal
    cfg = small_cfg(method=method, warm_start="jeffreys", epochs=2, max_batches_per_epoch=3, prior_init_batches=4)
    torch.manual_seed(0)
    m1, e1 = build_model(cfg, info.image_size, info.channels)
    init = copy.deepcopy((m1.state_dict(), e1.state_dict()))  # state_dict aliases the live tensors
    cls(m1, e1, cfg, out_dir=tmp_path / "full").fit(train, progress=False)

    m2, e2 = build_model(cfg, info.image_size, info.channels)
    m2.load_state_dict(init[0]), e2.load_state_dict(init[1])
    cls(m2, e2, cfg, out_dir=tmp_path / "split").fit(train, epochs=1, progress=False)
    m3, e3 = build_model(cfg, info.image_size, info.channels)  # a fresh process would start from random weights
    t3 = cls(m3, e3, cfg, out_dir=tmp_path / "split")
    t3.fit(train, resume=True, progress=False)
    assert t3.epoch == 2 and t3.global_step == 6
    for a, b in zip(list(m1.parameters()) + list(e1.parameters()), list(m3.parameters()) + list(e3.parameters())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == list(range(1, 7))


def test_corrupt_and_foreign_checkpoints_are_refused(animal, tmp_path):
    train, info = animal
    cfg = small_cfg(max_batches_per_epoch=1)
    model, enc = build_model(cfg, info.image_size, info.channels)
    tr = LPCTrainer(model, enc, cfg, out_dir=tmp_path)
    tr.fit(train, progress=False)
    ck = tmp_path / "checkpoint.pt"
    assert read_checkpoint(ck)["epoch"] == 1
    m, e, c, _ = load_trained(ck)
    torch.testing.assert_close(m.decoder.fc.weight, model.decoder.fc.weight)
    data = ck.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a neuro_lpc checkpoint"):
        read_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a neuro_lpc checkpoint"):
        read_checkpoint(other)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_cli_writes_a_rerunnable_config(tmp_path, capsys):
    out = tmp_path / "run"
    rc = train_main(["--out", str(out), "--epochs", "1", "--max-batches-per-epoch", "2", "--langevin-steps", "3",
                     "--batch-size", "16", "--sample-grid", "16", "--quiet"])
    assert rc == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["langevin_steps"] == 3 and meta["seed"] == 0 and meta["versions"]["torch"]
    assert (out / "samples_epoch001.png").stat().st_size > 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # re-run from the written file
    rc = train_main(["--out", str(tmp_path / "rerun"), "--config", str(out / "config.json"), "--quiet"])
    assert rc == 0
    again = json.loads((tmp_path / "rerun" / "config.json").read_text())
    assert again["config"] == meta["config"]


def test_cli_reports_bad_input_before_work(tmp_path, capsys):
    assert train_main(["--out", str(tmp_path / "a"), "--dataset", "cifar10", "--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "cifar" in err.lower()
    assert train_main(["--out", str(tmp_path / "b"), "--step-size", "-1"]) == 2
    assert "step_size" in capsys.readouterr().err
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
