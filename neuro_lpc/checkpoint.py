"""Crash-safe checkpoint files: atomic writes, a content checksum, and every random stream of a run.

* :func:`atomic_save` writes ``payload`` with ``torch.save`` to ``<name>.tmp``, fsyncs it, renames it over
  ``<name>`` (``os.replace``, atomic on POSIX) and fsyncs the folder: a kill at any moment leaves either the
  previous checkpoint or the new one, never a torn file.
* The payload carries ``checksum``: the sha256 of a canonical walk of its content (tensors by dtype,
  shape and raw bytes; plain values by type and ``repr``) -- independent of torch's zip layout, so it is
  recomputed on load from the loaded objects (:func:`verify`). It also carries ``config_digests``, a sha256
  per config key, so that a checkpoint whose stored config was edited is refused *naming the keys*.
* :func:`capture_rng` / :func:`restore_rng`: torch's global CPU (and every CUDA device's) generator,
  numpy's and Python's global generators, and any named ``torch.Generator`` a trainer owns, as plain
  tensors and numbers (loadable with ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import CheckpointError

__all__ = ["atomic_save", "atomic_write_text", "content_digest", "config_digests", "verify", "capture_rng",
           "restore_rng"]


# ------------------------------------------------------------------------------------ checksum ----

def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, np.ndarray):
        _feed(h, torch.from_numpy(np.ascontiguousarray(obj)))
    else:  # None, bool, int, float, str, bytes, torch.dtype/device: type tag + exact repr
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_digest(obj: Any) -> str:
    """sha256 (hex) of a canonical walk of ``obj`` (dicts by sorted key, tensors by dtype, shape and bytes)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def config_digests(config: Mapping[str, Any]) -> dict[str, str]:
    """One sha256 per config key (of its JSON text), so that an edited key can be named."""
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest() for k, v in config.items()}


def _body(ck: Mapping) -> dict:
    return {k: v for k, v in ck.items() if k != "checksum"}


def verify(ck: Mapping, path: str | os.PathLike) -> None:
    """Raise a one-line CheckpointError unless ``ck['checksum']`` matches its content.

    When the content differs, the config keys whose digest changed are named (a hand-edited config);
    otherwise the file is called corrupt."""
    stored = ck.get("checksum")
    if not isinstance(stored, str):
        raise CheckpointError(f"checkpoint {path} carries no checksum: refusing to load it")
    if content_digest(_body(ck)) == stored:
        return
    cfg, digests = ck.get("config"), ck.get("config_digests")
    if isinstance(cfg, Mapping) and isinstance(digests, Mapping):
        now = config_digests(cfg)
        changed = sorted(set(now) ^ set(digests) | {k for k in now if k in digests and now[k] != digests[k]})
        if changed:
            raise CheckpointError(f"checkpoint {path}: its stored config was edited after it was written "
                                  f"(changed: {', '.join(changed)}); refusing to load it")
    raise CheckpointError(f"checkpoint {path} fails its checksum: the file is corrupt; refusing to load it")


# ------------------------------------------------------------------------------ atomic writes ----

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(payload: dict, path: str | os.PathLike) -> dict:
    """Add ``config_digests`` (when a config is present) and ``checksum`` to ``payload`` and write it
    atomically (tmp file, fsync, ``os.replace``, fsync of the folder). Returns the payload as written."""
    p = Path(path)
    body = dict(payload)
    if isinstance(body.get("config"), Mapping):
        body["config_digests"] = config_digests(body["config"])
    body["checksum"] = content_digest(_body(body))
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    _fsync_dir(p.parent)
    return body


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically and durably (tmp file, fsync, ``os.replace``)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


# --------------------------------------------------------------------------------------- RNGs ----

def capture_rng(generators: Mapping[str, torch.Generator] | None = None) -> dict:
    """Every random stream of the process plus the named generators, as tensors and plain numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    out = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: Mapping, generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng` (a generator named in ``generators`` but absent from the state is left as is)."""
    torch.set_rng_state(state["torch_cpu"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda = state["torch_cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    saved = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name in saved:
            g.set_state(saved[name].cpu())
