"""Tests of neuro_lpc.record: round trips, streaming, buffering, crash safety, constant memory."""
from __future__ import annotations

import dataclasses
import gc
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neuro_lpc.record import FORMAT, HDF5Recorder, Trajectory, read_attrs, read_status

B, D = 3, 4


@dataclasses.dataclass
class NoiseConfig:
    amplitude: float = 0.1
    kinds: tuple = ("thermal", "flicker")


@dataclasses.dataclass
class RunConfig:
    name: str = "toy"
    noise: NoiseConfig = dataclasses.field(default_factory=NoiseConfig)
    out_dir: Path = Path("runs/toy")


def make_records(k: int, start: int = 0, seed: int = 0):
    """k records with recognisable content: t = start..start+k-1."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(start, start + k, dtype=torch.float64) * 0.01
    z = torch.randn(k, B, D, generator=gen)
    log_joint = torch.randn(k, B, generator=gen)
    gain = torch.rand(k, B, D, generator=gen)
    return t, z, log_joint, {"gain": gain, "error_norm": z.norm(dim=-1)}


def make_trajectory(R: int = 11) -> Trajectory:
    t, z, lj, extras = make_records(R)
    return Trajectory(t, z, lj, extras, {"config": RunConfig(), "seed": 7, "dt": 0.05})


def test_trajectory_round_trip_keeps_records_extras_and_attrs(tmp_path):
    traj = make_trajectory()
    path = tmp_path / "traj.h5"
    traj.to_hdf5(path, {"note": "hello"})
    back = Trajectory.from_hdf5(path)
    assert len(back) == len(traj) == 11 and back.n_chains == B and back.dim == D
    torch.testing.assert_close(back.t, traj.t)
    torch.testing.assert_close(back.z, traj.z)
    torch.testing.assert_close(back.log_joint, traj.log_joint)
    assert set(back.extras) == {"gain", "error_norm"}
    for name in back.extras:
        torch.testing.assert_close(back.extras[name], traj.extras[name])
    expected_attrs = {
        "config": {"name": "toy", "noise": {"amplitude": 0.1, "kinds": ["thermal", "flicker"]},
                   "out_dir": "runs/toy"},
        "seed": 7, "dt": 0.05, "note": "hello",
    }
    assert back.attrs == expected_attrs
    assert read_attrs(path) == expected_attrs
    assert read_status(path) == "complete"
    with h5py.File(path, "r") as f:  # scalar attrs are plain HDF5 attributes too
        assert f.attrs["seed"] == 7 and f.attrs["dt"] == 0.05 and f.attrs["format"] == FORMAT
        assert f.attrs["n_records"] == 11
        assert f["z"].maxshape == (None, B, D) and f["z"].chunks[1:] == (B, D)
        assert f["z"].compression == "gzip"
        assert f["extras/gain"].shape == (11, B, D)


def test_trajectory_checks_shapes_and_converts():
    t, z, lj, extras = make_records(5)
    with pytest.raises(ValueError, match="log_joint"):
        Trajectory(t, z, lj[:, :2])
    with pytest.raises(ValueError, match="z must have shape"):
        Trajectory(t, z[:4], lj)
    with pytest.raises(ValueError, match="extra 'gain'"):
        Trajectory(t, z, lj, {"gain": extras["gain"][:3]})
    traj = Trajectory(t, z, lj, extras)
    arrays = traj.numpy()
    assert set(arrays) == {"t", "z", "log_joint", "gain", "error_norm"}
    np.testing.assert_array_equal(arrays["z"], z.numpy())
    moved = traj.to("cpu")
    assert moved.z.device.type == "cpu" and torch.equal(moved.extras["gain"], extras["gain"])


def test_streaming_appends_equal_the_concatenation(tmp_path):
    sizes = [1, 4, 2, 7, 1]
    pieces = [make_records(k, start=sum(sizes[:i]), seed=i) for i, k in enumerate(sizes)]
    paths = {buf: tmp_path / f"stream_{buf}.h5" for buf in (0, 5)}
    for buf, path in paths.items():
        with HDF5Recorder(path, {"seed": 1}, buffer_records=buf) as rec:
            for t, z, lj, extras in pieces:
                rec.append(t, z, lj, **extras)
    expected_z = torch.cat([p[1] for p in pieces])
    expected_gain = torch.cat([p[3]["gain"] for p in pieces])
    for path in paths.values():
        back = Trajectory.from_hdf5(path)
        assert len(back) == sum(sizes)
        torch.testing.assert_close(back.z, expected_z)
        torch.testing.assert_close(back.extras["gain"], expected_gain)
        torch.testing.assert_close(back.t, torch.arange(sum(sizes), dtype=torch.float64) * 0.01)


def test_buffer_writes_only_when_full_and_flushes_on_close(tmp_path):
    path = tmp_path / "buffered.h5"
    with HDF5Recorder(path, {}, buffer_records=5) as rec:
        for i in range(3):
            rec.append(*make_records(1, start=i)[:3])
        assert (rec.records_written, rec.records_pending) == (0, 3)
        for i in range(3, 7):
            rec.append(*make_records(1, start=i)[:3])
        assert (rec.records_written, rec.records_pending) == (5, 2)
        rec.append(*make_records(12, start=7)[:3])  # larger than the buffer: written in pieces
        assert rec.records_written + rec.records_pending == 19 and rec.records_pending < 5
    assert len(Trajectory.from_hdf5(path)) == 19


def test_append_rejects_inconsistent_records_before_writing(tmp_path):
    with HDF5Recorder(tmp_path / "bad.h5", {}) as rec:
        t, z, lj, extras = make_records(2)
        rec.append(t, z, lj, **extras)
        with pytest.raises(ValueError, match="log_joint must have shape"):
            rec.append(t, z, lj[:1])
        with pytest.raises(ValueError, match="per-record shape"):
            rec.append(t, z[:, :, :2], lj, **extras)
        with pytest.raises(ValueError, match="extras"):
            rec.append(t, z, lj, gain=extras["gain"])
        assert rec.records_written == 2


def test_attrs_errors_come_before_the_file_is_created(tmp_path):
    path = tmp_path / "never.h5"
    with pytest.raises(TypeError, match="config.fn"):
        HDF5Recorder(path, {"config": {"fn": object()}})
    with pytest.raises(ValueError, match="reserved"):
        HDF5Recorder(path, {"status": "mine"})
    assert not path.exists()


def test_exception_marks_failed_and_keeps_buffered_records(tmp_path):
    path = tmp_path / "failed.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with HDF5Recorder(path, {"seed": 0}, buffer_records=10) as rec:
            rec.append(*make_records(3)[:3])
            raise RuntimeError("boom")
    assert read_status(path) == "failed: RuntimeError: boom"
    with pytest.warns(RuntimeWarning, match="failed"):
        assert len(Trajectory.from_hdf5(path)) == 3


CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests_dir!r})
    from test_record import make_records
    from neuro_lpc.record import HDF5Recorder
    direct = HDF5Recorder({direct!r}, {{"seed": 5}})
    buffered = HDF5Recorder({buffered!r}, {{"seed": 5}}, buffer_records=4)
    for i in range(7):
        t, z, lj, extras = make_records(1, start=i, seed=i)
        direct.append(t, z, lj, **extras)
        buffered.append(t, z, lj, **extras)
    print("appended", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_file_survives_sigkill_mid_run(tmp_path):
    direct, buffered = tmp_path / "direct.h5", tmp_path / "buffered.h5"
    code = CHILD.format(tests_dir=str(Path(__file__).parent), direct=str(direct), buffered=str(buffered))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # killed, no clean close
    assert "appended" in proc.stdout
    expected = [make_records(1, start=i, seed=i) for i in range(7)]
    for path, n_kept in ((direct, 7), (buffered, 4)):  # the buffer's 3 pending records are lost
        assert read_status(path) == "running"
        assert read_attrs(path) == {"seed": 5}
        with pytest.warns(RuntimeWarning, match="running"):
            back = Trajectory.from_hdf5(path)
        assert len(back) == n_kept
        torch.testing.assert_close(back.z, torch.cat([e[1] for e in expected[:n_kept]]))
        torch.testing.assert_close(back.extras["error_norm"], torch.cat([e[3]["error_norm"] for e in expected[:n_kept]]))


def test_memory_stays_flat_with_the_number_of_appends(tmp_path):
    """Traced Python memory after 1x and 10x a block of appends: neither retained nor peak may grow.

    ``gc.collect()`` between blocks empties CPython's free lists (which h5py's per-write selection
    objects fill up to a fixed cap), so what is left is what the recorder itself holds.
    """
    t, z, lj, extras = make_records(1)
    block, n_blocks = 40, 10

    for buffer_records in (0, 16):
        with HDF5Recorder(tmp_path / f"mem{buffer_records}.h5", {}, compression=None,
                          buffer_records=buffer_records) as rec:
            for _ in range(block):  # warm-up: dataset creation, h5py caches
                rec.append(t, z, lj, **extras)
            tracemalloc.start()
            try:
                gc.collect()
                baseline = tracemalloc.get_traced_memory()[0]
                retained, peaks = [], []
                for _ in range(n_blocks):
                    tracemalloc.reset_peak()
                    for _ in range(block):
                        rec.append(t, z, lj, **extras)
                    peaks.append(tracemalloc.get_traced_memory()[1] - baseline)
                    gc.collect()
                    retained.append(tracemalloc.get_traced_memory()[0] - baseline)
            finally:
                tracemalloc.stop()
        # a recorder keeping each record (>= ~200 bytes of numpy per append) would retain >= 8 kB more in *every*
        # block; HDF5's chunk index grows once when the file crosses a chunk boundary (seen: a single ~9 kB step
        # at block 3 with buffer_records = 16, flat before and after), so the typical block-to-block growth and the
        # growth over the second half count, not one step
        steps = sorted(b - a for a, b in zip(retained, retained[1:]))
        assert steps[len(steps) // 2] < 1024, (buffer_records, retained)     # a leak: >= 8 kB in every step
        for series in (retained, peaks):                                     # peaks are noisy (+- 3 kB) but flat
            assert series[-1] - series[n_blocks // 2] < 8 * 1024, (buffer_records, series)


def test_chunks_hold_a_few_hundred_records_or_about_one_mebibyte(tmp_path):
    path = tmp_path / "chunks.h5"
    big = torch.zeros(2, 2, 300_000)  # 2.4 MB per record of z
    with HDF5Recorder(path, {}, compression=None) as rec:
        rec.append(torch.zeros(2), big, torch.zeros(2, 2), small=torch.zeros(2, 2))
    with h5py.File(path, "r") as f:
        assert f["z"].chunks == (1, 2, 300_000)
        assert f["extras/small"].chunks[0] == 256
        assert f["log_joint"].chunks[0] == 256
        assert f["t"].dtype == np.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_buffered_cuda_records_reach_the_file(tmp_path):
    path = tmp_path / "cuda.h5"
    t, z, lj, extras = make_records(9)
    with HDF5Recorder(path, {}, buffer_records=4) as rec:
        for i in range(9):
            rec.append(t[i:i + 1].cuda(), z[i:i + 1].cuda(), lj[i:i + 1].cuda(),
                       **{k: v[i:i + 1].cuda() for k, v in extras.items()})
        assert rec._buffers["z"].device.type == "cuda"
    back = Trajectory.from_hdf5(path)
    torch.testing.assert_close(back.z, z)
    torch.testing.assert_close(back.extras["gain"], extras["gain"])
