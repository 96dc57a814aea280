"""Shared pieces of bench/run.py and bench/bench_gpu.py: timing (medians of interleaved repeats) and the machine."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402


def sync(dev) -> None:
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev) -> float:
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


def interleaved(fns: dict, dev, repeats: int, per: dict | None = None) -> dict:
    """{name: [seconds per unit] over repeats}: every repeat runs every fn once (load drifts hit all alike)."""
    per = per or {}
    out = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            out[k].append(timed(fn, dev) / per.get(k, 1))
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        kv = dict((a.strip(), b.strip()) for a, b in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln))
        flags = kv.get("Flags", "").split()
        info.update(model=kv.get("Model name"), family=kv.get("CPU family"), model_number=kv.get("Model"),
                    vendor=kv.get("Vendor ID"), hypervisor=kv.get("Hypervisor vendor"),
                    isa=[f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni",
                                     "amx_bf16", "amx_int8") if f in flags])
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return info


def machine() -> dict:
    """CPU model and ISA flags, GPU, threads, package versions, git commit, load at the start."""
    from neuro_lpc.config import git_commit, package_versions

    m = {"cpu": cpu_info(), "torch_threads": torch.get_num_threads(), "versions": package_versions(),
         "git_commit": git_commit(), "cuda": None}
    for pkg in ("torchsde",):
        try:
            from importlib import metadata
            m["versions"][pkg] = metadata.version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            m["versions"][pkg] = None
    if torch.cuda.is_available():
        m["cuda"] = {"device": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                     "capability": list(torch.cuda.get_device_capability(0)), "cuda": torch.version.cuda}
    try:
        m["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    m["malloc_env"] = {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    return m


def vmhwm_mib() -> float | None:
    """This process's peak resident memory (VmHWM, MiB) from /proc/self/status, None where unavailable.

    Not ``ru_maxrss``: Linux carries the parent's peak over fork/exec into a child's ru_maxrss, so a probe started
    from a large parent process (bench/run.py after other benchmarks) reports the parent's peak. VmHWM belongs
    to the process's own address space, fresh at exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
