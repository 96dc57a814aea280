"""Trajectories of a sampler and their crash-safe HDF5 recording.

Both the discrete LPC sampler (``neuro_lpc.langevin``) and the circuit simulator
(``circuits.integrate``) produce the same kind of record: at times t_r (r = 0..R-1) the latent
state z(t_r) of B chains in d dimensions, the log joint log p(x, z(t_r)) of each chain, and any
number of extra per-record quantities (error norm, gain units, score norm, noise states, ...).

* :class:`Trajectory` holds a whole record in memory (torch tensors).
* :class:`HDF5Recorder` streams records to disk as a run goes, with constant memory.

File layout (``format = "neuro_lpc.trajectory/1"``)::

    /t            (R,)        float64   record times
    /z            (R, B, d)             latent states
    /log_joint    (R, B)                log p(x, z) per chain
    /extras/<k>   (R, ...)              one dataset per extra quantity
    attrs: format, status, n_records, config_json, and every scalar entry of the run's attrs

Every dataset is chunked along time (a chunk holds at most 256 records and about 1 MiB),
optionally compressed, and grows by ``resize`` on each write. After every write the recorder
updates ``n_records`` and calls ``file.flush()``, so a process that dies mid-run (even by SIGKILL)
leaves a readable file holding every record written so far. ``status`` tells a reader how the
recording ended: ``"running"`` (still being written, or the writer died), ``"complete"`` (closed
cleanly) or ``"failed: <exception>"`` (the ``with`` block raised).

Creation is atomic: the two moments at which HDF5 writes most of a file's structure -- the file
itself with its attributes, and the datasets at the first append -- happen in a temporary file
``.<name>.tmp`` next to it (a copy of the header file for the second), which is flushed, fsynced and
renamed over ``<name>``. A kill at any moment therefore leaves at ``<name>`` either nothing (killed
before the first rename), the previous complete state, or a flushed file; never a half-created one
(h5py's "truncated file" of a run killed while creating its recording). A leftover temporary file is
removed by the next recorder of that path.

Decisions:

* times are stored as float64 whatever the caller's dtype (float32 loses the step size of a long
  run); other datasets keep the dtype of the first append (bfloat16 is widened to float32);
* the run's attrs dict is stored whole as JSON in ``config_json`` (dataclasses through
  ``dataclasses.asdict``; tuples become lists, tensors/arrays become nested lists, paths strings),
  and its top-level scalars (seed, dt, ...) are also plain HDF5 attributes for ``h5dump`` users;
* the file is not opened in SWMR mode (SWMR forbids rewriting attributes, which ``status`` and
  ``n_records`` need) nor with ``libver="latest"`` (whose superblock marks a crashed file as
  "still open" and makes it unreadable without ``h5clear``). A reader should therefore open a file
  only after its writer has stopped.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np
import torch

from .checkpoint import _fsync_dir

__all__ = ["Trajectory", "HDF5Recorder", "read_attrs", "read_status", "FORMAT"]

FORMAT = "neuro_lpc.trajectory/1"
CORE_FIELDS = ("t", "z", "log_joint")
RESERVED_ATTRS = ("format", "status", "n_records", "config_json")
MAX_CHUNK_RECORDS = 256
TARGET_CHUNK_BYTES = 1 << 20


# ----------------------------------------------------------------------------------- shapes ----

def _check_record_shapes(t: torch.Tensor, z: torch.Tensor, log_joint: torch.Tensor,
                         extras: Mapping[str, torch.Tensor], where: str) -> int:
    """Check t (R,), z (R, B, d), log_joint (R, B), extras (R, ...); return R."""
    for name, value in (("t", t), ("z", z), ("log_joint", log_joint), *extras.items()):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if t.ndim != 1:
        raise ValueError(f"{where}: t must have shape (R,), got {tuple(t.shape)}")
    R = t.shape[0]
    if z.ndim != 3 or z.shape[0] != R:
        raise ValueError(f"{where}: z must have shape (R={R}, B, d), got {tuple(z.shape)}")
    if tuple(log_joint.shape) != (R, z.shape[1]):
        raise ValueError(f"{where}: log_joint must have shape (R={R}, B={z.shape[1]}), got {tuple(log_joint.shape)}")
    for name, value in extras.items():
        if name in CORE_FIELDS:
            raise ValueError(f"{where}: extra {name!r} clashes with a core field {CORE_FIELDS}")
        if value.ndim == 0 or value.shape[0] != R:
            raise ValueError(f"{where}: extra {name!r} must have shape (R={R}, ...), got {tuple(value.shape)}")
    return R


# ---------------------------------------------------------------------------------- attrs ----

def _jsonable(value: Any, path: str) -> Any:
    """Convert a config value to plain JSON types; unknown types raise (a config must re-run)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), path)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"attrs: key {key!r} at {path or '<root>'} is not a string")
            out[key] = _jsonable(item, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value, path)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (os.PathLike, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"attrs: cannot store {path or '<root>'} of type {type(value).__name__} as JSON; "
                    "convert it to a number, string, list or dict")


def _plain_attrs(attrs: Mapping[str, Any]) -> dict:
    """The attrs as JSON types, after checking no key is reserved by the recorder."""
    if not isinstance(attrs, Mapping):
        raise TypeError(f"attrs must be a dict, got {type(attrs).__name__}")
    clash = sorted(set(attrs) & set(RESERVED_ATTRS))
    if clash:
        raise ValueError(f"attrs keys {clash} are reserved by the recorder ({RESERVED_ATTRS})")
    return _jsonable(attrs, "")


def _write_attrs(file: h5py.File, plain: Mapping[str, Any]) -> None:
    file.attrs["config_json"] = json.dumps(plain, sort_keys=True)
    for key, value in plain.items():
        if isinstance(value, (bool, int, float, str)):
            file.attrs[key] = value


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_attrs(path: str | os.PathLike) -> dict:
    """The attrs dict a recording was written with (from its ``config_json``; JSON types)."""
    with h5py.File(path, "r") as file:
        return json.loads(_attr_str(file.attrs.get("config_json", "{}")))


def read_status(path: str | os.PathLike) -> str:
    """How a recording ended: ``"running"`` (writer alive or died), ``"complete"`` or ``"failed: ..."``."""
    with h5py.File(path, "r") as file:
        return _attr_str(file.attrs.get("status", "unknown"))


# ------------------------------------------------------------------------------- numpy I/O ----

def _host_numpy(x: torch.Tensor) -> np.ndarray:
    """Copy a tensor to host memory as numpy (bfloat16/float16 widened to float32)."""
    x = x.detach()
    if x.dtype in (torch.bfloat16, torch.float16):
        x = x.float()
    return x.cpu().numpy()


def _chunk_records(record_nbytes: int) -> int:
    """Records per chunk: at most MAX_CHUNK_RECORDS and about TARGET_CHUNK_BYTES."""
    return int(max(1, min(MAX_CHUNK_RECORDS, TARGET_CHUNK_BYTES // max(1, record_nbytes))))


# ------------------------------------------------------------------------------- recorder ----

class HDF5Recorder:
    """Stream sampler records to an HDF5 file with constant memory and crash safety.

    ``HDF5Recorder(path, attrs, compression="gzip", buffer_records=0)`` opens (truncates) the file
    and marks it ``status = "running"``. Use it as a context manager::

        with HDF5Recorder(run_dir / "chain.h5", {"config": cfg, "seed": 0, "dt": dt},
                          buffer_records=256) as rec:
            for ...:
                rec.append(t, z, log_joint, error_norm=e)   # t (k,), z (k,B,d), log_joint (k,B)

    ``append`` takes k >= 1 records at once; datasets are created on the first append with the
    trailing shapes and dtypes seen there, and every later append must match them (and carry the
    same extra names).

    ``buffer_records = 0`` writes every append straight through (one host copy and one flush per
    call). ``buffer_records = N > 0`` keeps a preallocated ring of N records on the device of the
    first append and writes it out (one device-to-host copy, one flush) each time it fills, so a
    GPU loop that appends every step syncs with the host only every N records. Pending records are
    written on ``close``/``flush``/context exit, also when the block raises; if the process is killed,
    at most N - 1 pending records are lost and all written records survive.
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any] | None = None,
                 compression: str | None = "gzip", buffer_records: int = 0):
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"compression must be None, 'gzip' or 'lzf', got {compression!r}")
        if not isinstance(buffer_records, int) or buffer_records < 0:
            raise ValueError(f"buffer_records must be an int >= 0, got {buffer_records!r}")
        self.path = Path(path)
        self.compression = compression
        self.buffer_records = buffer_records
        self._datasets: dict[str, h5py.Dataset] = {}
        self._extra_names: tuple[str, ...] | None = None
        self._buffers: dict[str, torch.Tensor] = {}
        self._pending = 0
        self._written = 0
        plain_attrs = _plain_attrs(attrs or {})  # fail on an unstorable config before creating the file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: h5py.File | None = None

        def header(file: h5py.File) -> None:
            file.attrs["format"] = FORMAT
            file.attrs["status"] = "running"
            file.attrs["n_records"] = 0
            _write_attrs(file, plain_attrs)

        self._build_atomically(header, start_from=None)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "HDF5Recorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(status=f"failed: {exc_type.__name__}: {exc}")

    def __del__(self):  # a forgotten close still leaves a consistent file
        try:
            if self._file is not None:
                self.close(status="failed: recorder garbage-collected without close()")
        except Exception:
            pass

    # -- state -----------------------------------------------------------------------------
    @property
    def records_written(self) -> int:
        """Records already on disk."""
        return self._written

    @property
    def records_pending(self) -> int:
        """Records held in the device buffer, not yet on disk."""
        return self._pending

    @property
    def closed(self) -> bool:
        return self._file is None

    # -- writing ---------------------------------------------------------------------------
    def append(self, t: torch.Tensor, z: torch.Tensor, log_joint: torch.Tensor, **extras: torch.Tensor) -> None:
        """Append k records: t (k,), z (k, B, d), log_joint (k, B), extras (k, ...)."""
        if self._file is None:
            raise RuntimeError(f"HDF5Recorder({self.path}): append after close")
        k = _check_record_shapes(t, z, log_joint, extras, "HDF5Recorder.append")
        fields = {"t": t, "z": z, "log_joint": log_joint, **extras}
        self._check_consistent(fields)
        if k == 0:
            return
        if self.buffer_records == 0:
            self._write({name: _host_numpy(value) for name, value in fields.items()})
            return
        if not self._buffers:
            self._buffers = {name: torch.empty((self.buffer_records, *value.shape[1:]), dtype=value.dtype,
                                               device=value.device) for name, value in fields.items()}
            self._buffers["t"] = torch.empty(self.buffer_records, dtype=torch.float64, device=t.device)
        start = 0
        while start < k:
            take = min(k - start, self.buffer_records - self._pending)
            for name, value in fields.items():
                self._buffers[name][self._pending:self._pending + take].copy_(value[start:start + take])
            self._pending += take
            start += take
            if self._pending == self.buffer_records:
                self.flush()

    def flush(self) -> None:
        """Write the pending buffered records to disk (no-op when none)."""
        if self._file is None or self._pending == 0:
            return
        n = self._pending
        self._write({name: _host_numpy(buf[:n]) for name, buf in self._buffers.items()})
        self._pending = 0

    def close(self, status: str = "complete") -> None:
        """Write pending records, set ``status`` and close the file (idempotent)."""
        if self._file is None:
            return
        try:
            try:
                self.flush()
            except Exception as err:  # keep what is on disk readable and say why the tail is missing
                status = f"failed: {type(err).__name__} while writing the last records: {err}"
                raise
            finally:
                self._file.attrs["status"] = status
                self._file.flush()
        finally:
            self._file.close()
            self._file = None
            self._buffers = {}

    # -- internals -------------------------------------------------------------------------
    def _check_consistent(self, fields: Mapping[str, torch.Tensor]) -> None:
        extra_names = tuple(sorted(name for name in fields if name not in CORE_FIELDS))
        if self._extra_names is None:
            self._extra_names = extra_names
            self._trailing = {name: tuple(value.shape[1:]) for name, value in fields.items()}
            return
        if extra_names != self._extra_names:
            raise ValueError(f"HDF5Recorder.append: extras {list(extra_names)} differ from the first append's "
                             f"{list(self._extra_names)}")
        for name, value in fields.items():
            if tuple(value.shape[1:]) != self._trailing[name]:
                raise ValueError(f"HDF5Recorder.append: {name} has per-record shape {tuple(value.shape[1:])}, "
                                 f"the first append had {self._trailing[name]}")

    def _create(self, arrays: Mapping[str, np.ndarray]) -> None:
        extras_group = self._file.require_group("extras")
        for name, array in arrays.items():
            dtype = np.float64 if name == "t" else array.dtype
            trailing = array.shape[1:]
            record_nbytes = int(np.prod(trailing, dtype=np.int64)) * np.dtype(dtype).itemsize
            chunks = (_chunk_records(record_nbytes), *trailing)
            options = {}
            if self.compression is not None:
                options = {"compression": self.compression, "shuffle": True}
            group = self._file if name in CORE_FIELDS else extras_group
            self._datasets[name] = group.create_dataset(
                name, shape=(0, *trailing), maxshape=(None, *trailing), dtype=dtype, chunks=chunks, **options)

    @property
    def _tmp_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.tmp")

    def _build_atomically(self, build, start_from: Path | None) -> None:
        """Run ``build(file)`` on a temporary file (empty, or a copy of ``start_from``), flush, fsync and rename
        it over ``self.path``; then reopen ``self.path`` for appending (``self._file``)."""
        tmp = self._tmp_path
        if self._file is not None:
            self._file.close()
            self._file = None
        if start_from is not None:
            shutil.copyfile(start_from, tmp)
        file = h5py.File(tmp, "r+" if start_from is not None else "w")
        try:
            build(file)
            file.flush()
        except BaseException:
            file.close()
            tmp.unlink(missing_ok=True)
            if start_from is not None:   # keep appending to the file as it was
                self._file = h5py.File(self.path, "r+")
            raise
        file.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._file = h5py.File(self.path, "r+")

    def _write(self, arrays: Mapping[str, np.ndarray]) -> None:
        if not self._datasets:   # the datasets and the first records, created atomically
            def first(file):
                self._file = file
                try:
                    self._create(arrays)
                    self._write_records(arrays)
                except BaseException:
                    self._datasets, self._written = {}, 0
                    raise

            self._build_atomically(first, start_from=self.path)
            self._datasets = {name: (self._file if name in CORE_FIELDS else self._file["extras"])[name]
                              for name in arrays}
            return
        self._write_records(arrays)

    def _write_records(self, arrays: Mapping[str, np.ndarray]) -> None:
        k = arrays["t"].shape[0]
        new = self._written + k
        for name, array in arrays.items():
            dataset = self._datasets[name]
            dataset.resize(new, axis=0)
            dataset[self._written:new] = array
        self._written = new
        self._file.attrs["n_records"] = new
        self._file.flush()


# ----------------------------------------------------------------------------- trajectory ----

@dataclasses.dataclass
class Trajectory:
    """A recorded run: times, latent states and log joints of B chains, plus extras.

    t (R,), z (R, B, d), log_joint (R, B); ``extras[name]`` has shape (R, ...), e.g.
    ``"error_norm"`` (R, B), ``"gain"`` (R, B, d), ``"score_norm"`` (R, B), noise states.
    ``attrs`` holds the run's config, seed, dt, ... (anything :func:`read_attrs` can store).
    """

    t: torch.Tensor
    z: torch.Tensor
    log_joint: torch.Tensor
    extras: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    attrs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check_record_shapes(self.t, self.z, self.log_joint, self.extras, "Trajectory")

    def __len__(self) -> int:
        return self.t.shape[0]

    @property
    def n_chains(self) -> int:
        return self.z.shape[1]

    @property
    def dim(self) -> int:
        return self.z.shape[2]

    def to(self, device: torch.device | str) -> "Trajectory":
        """A copy with every tensor on ``device`` (attrs shared)."""
        return Trajectory(self.t.to(device), self.z.to(device), self.log_joint.to(device),
                          {name: value.to(device) for name, value in self.extras.items()}, self.attrs)

    def numpy(self) -> dict[str, np.ndarray]:
        """Host numpy arrays: ``{"t", "z", "log_joint", **extras}``."""
        out = {"t": _host_numpy(self.t), "z": _host_numpy(self.z), "log_joint": _host_numpy(self.log_joint)}
        out.update({name: _host_numpy(value) for name, value in self.extras.items()})
        return out

    def to_hdf5(self, path: str | os.PathLike, attrs: Mapping[str, Any] | None = None,
                compression: str | None = "gzip") -> None:
        """Write the whole trajectory; ``attrs`` (if given) update ``self.attrs`` in the file."""
        with HDF5Recorder(path, {**self.attrs, **(attrs or {})}, compression=compression) as recorder:
            recorder.append(self.t, self.z, self.log_joint, **self.extras)

    @classmethod
    def from_hdf5(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> "Trajectory":
        """Read a recording back (records, extras and attrs).

        A recording whose status is not ``"complete"`` (writer died or raised) is read up to its last
        written record, with a ``RuntimeWarning`` naming the status.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no recording at {path}")
        with h5py.File(path, "r") as file:
            fmt = _attr_str(file.attrs.get("format", ""))
            if fmt != FORMAT:
                raise ValueError(f"{path} is not a neuro_lpc trajectory (format {fmt!r}, expected {FORMAT!r})")
            status = _attr_str(file.attrs.get("status", "unknown"))
            if any(name not in file for name in CORE_FIELDS):
                raise ValueError(f"{path} holds no records (status {status!r})")
            datasets = {name: file[name] for name in CORE_FIELDS}
            datasets.update({name: ds for name, ds in file.get("extras", {}).items()})
            n = min([int(file.attrs.get("n_records", 0))] + [ds.shape[0] for ds in datasets.values()])
            arrays = {name: torch.from_numpy(ds[:n]).to(device) for name, ds in datasets.items()}
            attrs = json.loads(_attr_str(file.attrs.get("config_json", "{}")))
        if status != "complete":
            warnings.warn(f"{path}: recording status is {status!r}; read its {n} written records",
                          RuntimeWarning, stacklevel=2)
        core = {name: arrays.pop(name) for name in CORE_FIELDS}
        return cls(core["t"], core["z"], core["log_joint"], arrays, attrs)
