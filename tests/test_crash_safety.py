"""Crash safety of training (issue 10, section 4): mid-epoch checkpoints with every RNG and the data
position, bit-equal resume after an exception, SIGKILL or SIGINT, metrics without duplicates, atomic
checksummed checkpoints, refused hand edits and changed hyperparameters, --resume before a checkpoint."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neuro_lpc import CheckpointError, TrainConfig
from neuro_lpc.checkpoint import capture_rng, restore_rng
from neuro_lpc.data import load_dataset, make_loader
from neuro_lpc.train import LPCTrainer, VAETrainer, _skip_batches, build_model, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def animal():
    train, _test, info = load_dataset("animal-mnist")
    return train, info


def cfg(**kw):
    base = dict(batch_size=8, langevin_steps=2, max_batches_per_epoch=4, prior_init_batches=3, sample_grid=0,
                epochs=2, seed=5, device="cpu", checkpoint_every_s=None)
    base.update(kw)
    return TrainConfig(**base)


def params(trainer):
    return [p.detach().clone() for p in list(trainer.model.parameters()) + list(trainer.encoder.parameters())]


def assert_bit_equal(a, b):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"parameter {i} differs"


def steps_logged(folder):
    return [json.loads(ln)["step"] for ln in (folder / "metrics.jsonl").read_text().splitlines()]


class Crash(RuntimeError):
    pass


def crashing(cls, at_step):
    """A trainer class that raises before the optimiser step number ``at_step`` (1-based) starts."""
    class Crashing(cls):
        def train_step(self, x):
            if self.global_step + 1 == at_step:
                raise Crash(f"injected crash before step {at_step}")
            return super().train_step(x)
    return Crashing


def test_skip_batches_gives_the_tail_of_the_epoch_without_loading_the_skipped_data():
    class Counting(torch.utils.data.Dataset):
        def __init__(self):
            self.loaded = 0

        def __len__(self):
            return 40

        def __getitem__(self, i):
            self.loaded += 1
            return torch.tensor([i]), 0

    ds = Counting()
    full = [b[0].flatten().tolist() for b in make_loader(ds, 4, shuffle=True, seed=11)]
    ds.loaded = 0
    it = _skip_batches(make_loader(ds, 4, shuffle=True, seed=11), 3)
    assert ds.loaded == 0                                    # indices drawn, no item loaded
    assert [b[0].flatten().tolist() for b in it] == full[3:]


def test_rng_capture_restores_every_global_stream_and_named_generators():
    g = torch.Generator().manual_seed(3)
    state = capture_rng({"g": g})
    first = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    restore_rng(state, {"g": g})
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    assert torch.equal(first[3], again[3])


@pytest.mark.parametrize("method,cls,crash_at,every", [("lpc", LPCTrainer, 6, 2)])
def test_mid_epoch_resume_after_a_crash_is_bit_equal(animal, tmp_path, method, cls, crash_at, every):
    """Crash mid-epoch (an exception before step crash_at), resume from the last every-N-steps checkpoint:
    the parameters equal an uninterrupted run's exactly, and metrics.jsonl has each step once."""
    train, info = animal
    c = cfg(method=method, checkpoint_every_steps=every, max_batches_per_epoch=3)
    whole = cls(*build_model(c, info.image_size, info.channels), c, out_dir=tmp_path / "whole")
    whole.fit(train, progress=False)
    split = tmp_path / "split"
    with pytest.raises(Crash):
        crashing(cls, crash_at)(*build_model(c, info.image_size, info.channels), c, out_dir=split).fit(train, progress=False)
    ck = read_checkpoint(split / "checkpoint.pt")
    last = (crash_at - 1) // every * every
    assert ck["global_step"] == last and ck["epoch_batch"] == last % 3 == 1   # mid-epoch
    assert steps_logged(split) == list(range(1, crash_at))                   # lines past the checkpoint exist ...
    again = cls(*build_model(c, info.image_size, info.channels), c, out_dir=split)
    again.fit(train, resume=True, progress=False)
    assert again.global_step == 6 and again.epoch == 2
    assert_bit_equal(params(whole), params(again))
    assert steps_logged(split) == list(range(1, 7))                          # ... and are dropped on resume
    whole_losses = [json.loads(ln)["loss"] for ln in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    split_losses = [json.loads(ln)["loss"] for ln in (split / "metrics.jsonl").read_text().splitlines()]
    assert whole_losses == split_losses


def dataclass_replace(c, **kw):
    import dataclasses
    return dataclasses.replace(c, **kw)


def test_checkpoint_every_s_writes_by_time(animal, tmp_path, monkeypatch):
    train, info = animal
    c = cfg(method="vae", epochs=1, checkpoint_every_s=1.0)
    tr = VAETrainer(*build_model(c, info.image_size, info.channels), c, out_dir=tmp_path)
    saved = []
    orig = tr.save_checkpoint
    clock = iter(range(0, 1000, 3))                                   # each clock read advances 3 "seconds"
    monkeypatch.setattr("neuro_lpc.train.time.perf_counter", lambda: float(next(clock)))
    tr.save_checkpoint = lambda p: (saved.append(tr.global_step), orig(p))
    tr.fit(train, progress=False)
    assert saved[:-1] == [1, 2, 3] and saved[-1] == 4                  # every step is > 1 s apart, then the epoch end


# ----------------------------------------------------------------------- subprocess kills ----

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import torch
    torch.set_num_threads({threads})   # the test process's: float reductions then match bit for bit
    import neuro_lpc.checkpoint as C
    from neuro_lpc import TrainConfig
    from neuro_lpc.data import load_dataset
    from neuro_lpc.train import VAETrainer, build_model
    kill_step, kill_in_save = {kill_step}, {kill_in_save}
    train, _, info = load_dataset("animal-mnist")
    c = TrainConfig(**{cfg})
    class T(VAETrainer):
        def train_step(self, x):
            if self.global_step + 1 == kill_step:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().train_step(x)
    if kill_in_save:                       # die after the temporary file is written, before the rename
        real = os.replace
        def replace(a, b):
            if str(b).endswith("checkpoint.pt") and T.steps_done == kill_in_save:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)
        C.os.replace = replace
    T.steps_done = 0
    class U(T):
        def train_step(self, x):
            out = super().train_step(x)
            T.steps_done = self.global_step + 1
            return out
    U(*build_model(c, info.image_size, info.channels), c, out_dir={out!r}).fit(train, progress=False)
""")


def run_script(out, config, kill_step=0, kill_in_save=0):
    code = SCRIPT.format(root=str(ROOT), threads=torch.get_num_threads(), kill_step=kill_step, kill_in_save=kill_in_save, cfg=config, out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


KILL_CONFIG = dict(method="vae", batch_size=8, max_batches_per_epoch=4, epochs=2, seed=4, sample_grid=0, device="cpu",
                   checkpoint_every_steps=2, checkpoint_every_s=None)


@pytest.fixture(scope="module")
def uninterrupted(animal, tmp_path_factory):
    train, info = animal
    c = TrainConfig(**KILL_CONFIG)
    whole = VAETrainer(*build_model(c, info.image_size, info.channels), c, out_dir=tmp_path_factory.mktemp("whole"))
    whole.fit(train, progress=False)
    return params(whole)


@pytest.mark.parametrize("kill_step,kill_in_save", [pytest.param(3, 0, marks=pytest.mark.slow),
                                                    pytest.param(5, 0, marks=pytest.mark.slow), (0, 6)])
def test_sigkill_then_resume_is_bit_equal(animal, uninterrupted, tmp_path, kill_step, kill_in_save):
    """SIGKILL mid-epoch (before step 3), right after the epoch-1 checkpoint (before step 5), and inside the
    write of the step-6 checkpoint (temporary file written, not yet renamed): the file left is the previous
    good checkpoint, and a resume ends bit-equal to an uninterrupted run."""
    train, info = animal
    config = KILL_CONFIG
    c = TrainConfig(**config)
    out = tmp_path / "killed"
    r = run_script(out, config, kill_step, kill_in_save)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    ck = read_checkpoint(out / "checkpoint.pt")                  # readable, checksum verified
    assert ck["global_step"] == {3: 2, 5: 4, 0: 4}[kill_step]
    again = VAETrainer(*build_model(c, info.image_size, info.channels), c, out_dir=out)
    again.fit(train, resume=True, progress=False)
    assert_bit_equal(uninterrupted, params(again))
    assert steps_logged(out) == list(range(1, 9))


def test_sigint_checkpoints_the_current_step_and_exits_130(animal, tmp_path):
    """Ctrl-C during a CLI run: the step in flight finishes, is checkpointed and logged, one line, exit 130;
    the checkpoint holds exactly the state of an uninterrupted run of that many steps."""
    train, info = animal
    out = tmp_path / "run"
    args = ["--out", str(out), "--method", "vae", "--batch-size", "8", "--max-batches-per-epoch", "100",
            "--epochs", "100", "--sample-grid", "0", "--seed", "2", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "sims" / "train_lpc.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    metrics = out / "metrics.jsonl"
    t0 = time.time()
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted after global step" in lines[0] and "checkpoint written" in lines[0], stderr
    ck = read_checkpoint(out / "checkpoint.pt")
    n = ck["global_step"]
    assert n >= 3 and steps_logged(out) == list(range(1, n + 1))          # stopped at the step it checkpointed
    c = TrainConfig.from_file(out / "config.json")
    epochs, rest = divmod(n, 100)
    assert (ck["epoch"], ck["epoch_batch"]) == (epochs, rest)
    ref_cfg = dataclass_replace(c, epochs=epochs + 1) if rest else dataclass_replace(c, epochs=epochs)
    ref = VAETrainer(*build_model(ref_cfg, info.image_size, info.channels), ref_cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # the CLI run's (OMP_NUM_THREADS=1): float reductions then match bit for bit
    if rest:   # the interrupted epoch's first `rest` batches
        ref.fit(train, epochs=epochs, progress=False)
        ref.config = dataclass_replace(ref_cfg, max_batches_per_epoch=rest)
        ref.fit(train, epochs=epochs + 1, progress=False)
    else:
        ref.fit(train, progress=False)
    torch.set_num_threads(threads)
    again = VAETrainer(*build_model(c, info.image_size, info.channels), c)
    again.load_checkpoint(out / "checkpoint.pt")
    assert ref.global_step == n
    assert_bit_equal(params(ref), params(again))


# ------------------------------------------------------------------------- resume and edits ----

def test_resume_before_any_checkpoint_starts_fresh_with_a_note(animal, tmp_path, capsys):
    train, info = animal
    c = cfg(method="vae", epochs=1, max_batches_per_epoch=2)
    tr = VAETrainer(*build_model(c, info.image_size, info.channels), c, out_dir=tmp_path / "new")
    tr.fit(train, resume=True, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert tr.global_step == 2 and len(err) == 1 and err[0].startswith("note:") and "fresh" in err[0]


def test_a_hand_edited_or_corrupted_checkpoint_is_refused(animal, tmp_path):
    train, info = animal
    c = cfg(method="vae", epochs=1, max_batches_per_epoch=1)
    VAETrainer(*build_model(c, info.image_size, info.channels), c, out_dir=tmp_path).fit(train, progress=False)
    path = tmp_path / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    ck["config"]["lr"] = 0.5
    ck["config"]["seed"] = 9
    torch.save(ck, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"stored config was edited .*changed: lr, seed\)"):
        read_checkpoint(tmp_path / "edited.pt")
    ck = torch.load(path, weights_only=True)
    ck["model"][next(iter(ck["model"]))].view(-1)[0] += 1e-3
    torch.save(ck, tmp_path / "flipped.pt")
    with pytest.raises(CheckpointError, match="fails its checksum"):
        read_checkpoint(tmp_path / "flipped.pt")
    ck = torch.load(path, weights_only=True)
    del ck["checksum"]
    torch.save(ck, tmp_path / "nosum.pt")
    with pytest.raises(CheckpointError, match="no checksum"):
        read_checkpoint(tmp_path / "nosum.pt")
    assert read_checkpoint(path)["global_step"] == 1          # the original still loads


def test_resume_with_changed_hyperparameters_is_refused_naming_them(animal, tmp_path, capsys, monkeypatch):
    import neuro_lpc.data
    from neuro_lpc.cli import train_main

    out = tmp_path / "run"
    base = ["--out", str(out), "--method", "vae", "--batch-size", "8", "--max-batches-per-epoch", "2", "--epochs", "1",
            "--sample-grid", "0", "--device", "cpu", "--quiet"]
    assert train_main(base) == 0
    before = (out / "config.json").read_text()
    capsys.readouterr()
    real_load = neuro_lpc.data.load_dataset

    def no_data(*a, **k):
        raise AssertionError("the data set was loaded before the changed config was refused")
    monkeypatch.setattr(neuro_lpc.data, "load_dataset", no_data)        # refused before any work
    assert train_main(["--out", str(out), "--resume", "--lr", "0.01", "--quiet"]) == 2
    monkeypatch.setattr(neuro_lpc.data, "load_dataset", real_load)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr (checkpoint 0.001, now 0.01)" in err[0] and err[0].startswith("error:")
    assert (out / "config.json").read_text() == before                   # config.json still describes the checkpoint
    # --resume alone takes the run's own config.json; more epochs is a resumable change
    assert train_main(["--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert read_checkpoint(out / "checkpoint.pt")["global_step"] == 4
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 2


# -------------------------------------------------------------------------- HDF5 recordings ----

H5_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    import h5py, torch
    import neuro_lpc.record as R
    where, folder = {where!r}, {folder!r}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "header":           # attributes written, nothing flushed yet
        real_attrs = R._write_attrs
        R._write_attrs = lambda f, a: (real_attrs(f, a), die())
    elif where == "datasets":       # datasets created at the first append, nothing flushed yet
        real_create = R.HDF5Recorder._create
        R.HDF5Recorder._create = lambda self, arrays: (real_create(self, arrays), die())
    elif where == "append":         # a later append: datasets resized, records not yet written
        real_resize = h5py.Dataset.resize
        calls = [0]
        def resize(self, *a, **k):
            calls[0] += 1
            real_resize(self, *a, **k)
            if calls[0] == 4 + 2:          # the second append of the first recording
                die()
        h5py.Dataset.resize = resize
    print("ready", flush=True)
    for i in range(10_000):         # many short recordings: a kill lands in creation as often as in writing
        rec = R.HDF5Recorder(os.path.join(folder, f"r{{i}}.h5"), {{"run": i}})
        for k in range(3):
            rec.append(torch.arange(2.0) + 2 * k, torch.randn(2, 4, 3), torch.randn(2, 4), e=torch.randn(2, 4))
        rec.close()
""")


@pytest.mark.parametrize("where", ["header", "datasets", "append", 0.0, 0.05, 0.3])
def test_a_recording_killed_at_any_moment_is_readable_and_says_it_is_incomplete(tmp_path, where):
    """SIGKILL while the file and its attributes are being created, while the datasets are created at the
    first append, in the middle of a later append, and at three arbitrary moments of a loop of short
    recordings: every recording left behind opens with h5py; the last one's status says it is incomplete
    ("running"), with whole records only; the earlier ones are complete."""
    from neuro_lpc.record import read_status

    folder = tmp_path / "recs"
    folder.mkdir()
    code = H5_CHILD.format(root=str(ROOT), where=where if isinstance(where, str) else "random", folder=str(folder))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    if not isinstance(where, str):
        time.sleep(where)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    files = sorted(folder.glob("r*.h5"), key=lambda p: int(p.stem[1:]))
    if isinstance(where, str):
        assert len(files) <= 1
    for i, path in enumerate(files):
        with h5py.File(path, "r") as f:                         # opens: never a half-created file
            n = int(f.attrs["n_records"])
            assert f.attrs["run"] == i
            if "t" in f:
                assert f["t"].shape[0] >= n and f["z"].shape[0] >= n
        status = read_status(path)
        if i < len(files) - 1:
            assert status == "complete" and n == 6
        else:
            assert status in ("running", "complete") and n in (0, 2, 4, 6)
            if isinstance(where, str):
                assert status == "running"                      # incomplete, and says so
                assert n == {"header": 0, "datasets": 0, "append": 2}[where]


def test_circuit_trainer_mid_epoch_resume_is_bit_equal(tmp_path):
    """The circuit trainer, with a 1/f noise bank carried from one presentation to the next (checkpointed
    noise_state): crash before step 5 of an 8-batch epoch, resume from the step-3 checkpoint."""
    from torch import nn
    from torch.utils.data import TensorDataset

    from circuits.learn import CircuitTrainConfig, CircuitTrainer
    from neuro_lpc import GaussianLikelihood, GenerativeModel, MLPEncoder

    def problem():
        g = torch.Generator().manual_seed(0)
        X = torch.randn(64, 8, generator=g, dtype=torch.float64)
        torch.manual_seed(1)
        model = GenerativeModel(nn.Linear(3, 8).double(), GaussianLikelihood(0.5, learn_sigma=True), latent_dim=3)
        return model.double(), MLPEncoder(8, 3, hidden=16).double(), TensorDataset(X, torch.zeros(64, dtype=torch.long))

    c = CircuitTrainConfig(batch_size=8, presentation_steps=5, max_batches_per_epoch=8, prior_init_batches=2,
                           sample_grid=0, seed=3, tau_e=0.0, dt=1e-3, latent_dim=3, likelihood="gaussian",
                           device="cpu", checkpoint_every_steps=3, checkpoint_every_s=None,
                           noise={"preset": "ideal", "sources": [{"type": "flicker", "value_std": 0.2}]})
    m, e, data = problem()
    whole = CircuitTrainer(m, e, c, out_dir=tmp_path / "whole")
    whole.fit(data, progress=False)
    with pytest.raises(Crash):
        crashing(CircuitTrainer, 5)(*problem()[:2], c, out_dir=tmp_path / "split").fit(data, progress=False)
    assert read_checkpoint(tmp_path / "split" / "checkpoint.pt")["epoch_batch"] == 3
    again = CircuitTrainer(*problem()[:2], c, out_dir=tmp_path / "split")
    again.fit(data, resume=True, progress=False)
    assert_bit_equal(params(whole), params(again))
    assert steps_logged(tmp_path / "split") == list(range(1, 9))
