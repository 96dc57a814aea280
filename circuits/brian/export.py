"""``export_brian2``: a standalone, runnable Brian2 script of a circuit, its weights in an .npz beside it.

The script needs only numpy and brian2 (not this project): it holds a verbatim copy of
``circuits.brian.network`` (the equations, documented there) and a small command line::

    python circuit.py                                  # runtime device, numpy target
    python circuit.py --target cython                  # runtime device, compiled (cached in ~/.cython)
    python circuit.py --device cpp_standalone          # Brian2 generates and compiles a C++ project
    python circuit.py --steps 20000 --seed 3 --out stats.json

and records its own statistics: ``<script>_stats.json`` (mean and covariance of z over the second half of
the records, pooled over chains; the run's settings and wall time) and ``<script>_trajectory.npz`` (t, z).
With the numpy target and the same seed the script reproduces ``simulate_brian2`` exactly (same objects,
same random stream).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from .._checks import check_int
from . import network
from .spec import circuit_spec

__all__ = ["export_brian2"]

_MAIN = '''

# ------------------------------------------------------------------------------------------ command line
SPEC_FILE = Path(__file__).with_suffix(".npz")
DEFAULTS = {defaults}


def main(argv=None):
    p = argparse.ArgumentParser(description="Run the exported LPC circuit in Brian2 and record its statistics.")
    p.add_argument("--device", choices=["runtime", "cpp_standalone"], default="runtime",
                   help="runtime (numpy/cython code objects) or Brian2's cpp_standalone device (needs a C++ compiler)")
    p.add_argument("--target", choices=["numpy", "cython"], default="numpy", help="code target of the runtime device")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--record-every", type=int, default=DEFAULTS["record_every"])
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--burn", type=float, default=0.5, help="fraction of the records dropped before the statistics")
    p.add_argument("--out", default=None, help="statistics file (default: <script>_stats.json beside the script)")
    p.add_argument("--build-dir", default=None, help="cpp_standalone project folder (default: <script>_standalone)")
    args = p.parse_args(argv)
    if args.steps < 1 or not 1 <= args.record_every <= args.steps or not 0 <= args.burn < 1:
        p.error("need steps >= 1, 1 <= record-every <= steps and 0 <= burn < 1")
    import brian2 as b2

    spec = dict(np.load(SPEC_FILE, allow_pickle=False))
    if args.device == "cpp_standalone":
        build = args.build_dir or str(Path(__file__).with_name(Path(__file__).stem + "_standalone"))
        b2.set_device("cpp_standalone", directory=build, build_on_run=True)
    else:
        b2.prefs.codegen.target = args.target
    start = time.perf_counter()
    out = run_network(spec, args.steps, args.record_every, seed=args.seed)
    wall = time.perf_counter() - start
    stats = summary_statistics(out["z"], args.burn)
    record = {"mean": stats["mean"].tolist(), "cov": stats["cov"].tolist(), "n_samples": stats["n_samples"],
              "steps": args.steps, "record_every": args.record_every, "seed": args.seed, "burn": args.burn,
              "device": args.device, "target": args.target if args.device == "runtime" else "cpp",
              "dt": float(spec["dt"]), "batch": int(spec["B"]), "wall_s": wall, "brian2": b2.__version__}
    path = Path(args.out) if args.out else Path(__file__).with_name(Path(__file__).stem + "_stats.json")
    path.write_text(json.dumps(record, indent=1))
    np.savez(path.with_name(Path(__file__).stem + "_trajectory.npz"), t=out["t"], z=out["z"])
    print(f"mean z = {{np.array2string(stats['mean'], precision=4)}}; {{stats['n_samples']}} samples; "
          f"{{wall:.2f}} s ({{record['device']}}/{{record['target']}}); statistics in {{path}}")


if __name__ == "__main__":
    main()
'''


def export_brian2(model, x, config, path, z0=None, steps: int = 10_000, record_every: int = 10,
                  seed: int | None = None) -> Path:
    """Write a standalone Brian2 script of ``Circuit(model, config)`` on x to ``path`` (a .py file) and its
    spec (weights, frozen draws, x, z0) to ``path`` with suffix .npz. Returns the script's path.

    steps, record_every, seed: the script's defaults (seed default: ``config.seed``). Raises
    ``BrianUnsupported`` / ValueError (one line) before writing anything when the circuit cannot be expressed.
    """
    check_int("steps", steps, 1)
    check_int("record_every", record_every, 1, steps)
    path = Path(path)
    if path.suffix != ".py":
        raise ValueError(f"export path must end in .py, got {str(path)!r}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"{path.parent} is not a folder")
    spec = circuit_spec(model, x, config, z0=z0, seed=seed)
    spec.pop("_circuit")
    defaults = {"steps": steps, "record_every": record_every, "seed": int(spec.pop("seed"))}
    source = inspect.getsource(network).replace("from __future__ import annotations\n", "")
    header = (f'#!/usr/bin/env python\n"""A Langevin predictive-coding circuit in Brian2, exported by '
              f'circuits.brian.export_brian2.\n\nBatch {spec["B"]}, latent d = {spec["d"]}, observations n = '
              f'{spec["n"]}, layers {list(map(int, spec["sizes"]))} ({", ".join(map(str, spec["acts"]))}), dt = '
              f'{spec["dt"]:g} s, {"adiabatic" if spec["adiabatic"] else "finite-tau_e"} error units.\n'
              f'Weights and frozen draws: {path.with_suffix(".npz").name} beside this file. Usage: '
              f'python {path.name} [--device cpp_standalone] [--target cython] [--steps N] [--seed S].\n"""\n'
              "from __future__ import annotations\n\nimport argparse\nimport json\nimport time\n"
              "from pathlib import Path\n\n# ---- circuits/brian/network.py (verbatim) ----\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".npz"), **{k: np.asarray(v) for k, v in spec.items()})
    path.write_text(header + source + _MAIN.replace("{defaults}", json.dumps(defaults)).replace("{{", "{")
                    .replace("}}", "}"))
    return path
