"""Typed checks of user input and the command-line boundary shared by the four CLIs.

Field checks (``check_int``, ``check_number``, ``check_choice``, ``check_text``, ``check_bool``) raise
``ValueError`` with one line naming the field, what it must be and what it got: booleans are not
numbers, strings are not numbers (a JSON config with ``"lr": "0.001"`` is refused), NaN and inf are
refused unless asked for, and counts that would make a run hang (huge T, huge sample grids) hit an
upper bound (``LIMITS``) named in the message.

``OneLineParser`` is an ``argparse.ArgumentParser`` whose usage errors are one line
(``error: ...``, exit 2) instead of a usage block; ``cli_boundary`` runs a CLI body and turns every
error that escapes it into one line on stderr and an exit code (2: bad input; 1: the run failed,
e.g. diverged; 130: interrupted), never a traceback -- set ``NEURO_LPC_DEBUG=1`` (or pass
``--debug``) to get the traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["LIMITS", "OneLineParser", "check_int", "check_number", "check_choice", "check_text", "check_bool",
           "check_path_text", "check_positive", "check_device", "check_out_dir", "check_cache_dir", "cli_boundary",
           "one_line",
           "one_line_errors",
           "DEBUG_ENV"]

DEBUG_ENV = "NEURO_LPC_DEBUG"

# Upper bounds on sizes: beyond these a run would hang or exhaust memory long before it reports anything.
# Each is far above any setting the paper or the docs use (paper: T = 300, batch 64, 64-sample grids).
LIMITS = {
    "steps": 100_000,          # Langevin / Euler-Maruyama steps per batch or per chain (paper: 300)
    "epochs": 100_000,
    "batches": 10_000_000,     # batches per epoch / training batches
    "batch_size": 65_536,
    "latent_dim": 4_096,       # paper: 40
    "sample_grid": 1_024,      # images in the per-epoch PNG grid (drawn in one batch)
    "samples": 1_000_000,      # samples scored for FID/KID (paper protocol: 50,000)
    "chains": 100_000,
    "threads": 1_024,
    "workers": 256,
    "seed": 2**32 - 1,        # numpy and torch generators both take it; data-order seeds are derived from it
}


def one_line(text: object) -> str:
    """Collapse whitespace (messages of nested errors may carry newlines) into one line."""
    return " ".join(str(text).split())


def _is_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


def check_int(name: str, v, *, lo: int | None = 1, hi: int | None = None, allow_none: bool = False):
    """An int (not a bool, not a float, not a string) in [lo, hi]."""
    if v is None and allow_none:
        return v
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{name} must be an integer{' or null' if allow_none else ''}, got {v!r}")
    if lo is not None and v < lo:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
        raise ValueError(f"{name} must be {what}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}={v} is too large (at most {hi}; larger values would run for hours or exhaust memory)")
    return v


def check_number(name: str, v, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False, allow_none: bool = False, allow_inf: bool = False, unit: str = ""):
    """A real number (int or float; not a bool or string), not NaN, finite unless ``allow_inf``, in the range."""
    if v is None and allow_none:
        return v
    if not _is_number(v):
        raise ValueError(f"{name} must be a number{unit}{' or null' if allow_none else ''}, got {v!r}")
    if math.isnan(v) or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a finite number{unit}, got {v!r}")
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        left = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
        right = "" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
        if hi is None:
            rng = f"> {lo:g}" if lo_open else f">= {lo:g}"
            if lo == 0:
                rng = "positive" if lo_open else "non-negative"
            raise ValueError(f"{name} must be {rng}{unit}, got {v!r}")
        if lo is None:
            raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi:g}{unit}, got {v!r}")
        raise ValueError(f"{name} must be in {left}, {right}{unit}, got {v!r}")
    return v


def check_choice(name: str, v, choices: Iterable, *, allow_none: bool = False):
    choices = tuple(choices)
    if v is None and allow_none:
        return v
    if not isinstance(v, str) or v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {v!r}")
    return v


def check_text(name: str, v, *, allow_none: bool = False):
    """A non-empty string without control characters (names, labels)."""
    if v is None and allow_none:
        return v
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a string{' or null' if allow_none else ''}, got {v!r}")
    if not v.strip():
        raise ValueError(f"{name} must not be empty")
    if any(ord(c) < 32 for c in v) or "\x00" in v:
        raise ValueError(f"{name} must not contain control characters, got {v!r}")
    return v


check_path_text = check_text   # a path given as text: non-empty ('' would silently mean the current folder)


def check_bool(name: str, v):
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false, got {v!r}")
    return v


def check_device(name: str, v) -> str:
    """auto | cpu | cuda | cuda:N, and a CUDA device must exist on this machine (checked before any work)."""
    check_text(name, v)
    if v in ("auto", "cpu"):
        return v
    if v == "cuda" or v.startswith("cuda:"):
        idx = v[5:]
        if v != "cuda" and not idx.isdigit():
            raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {v!r}")
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"{name} {v!r} requested but no CUDA device is available (use cpu or auto)")
        if v != "cuda" and int(idx) >= torch.cuda.device_count():
            raise ValueError(f"{name} {v!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return v
    raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {v!r}")


def _writable_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{what} is not writable: {path} ({e.strerror or type(e).__name__})") from None
    return path


def check_out_dir(v, what: str = "output folder") -> Path:
    """A non-empty path to a folder that can be created and written (checked with a probe file)."""
    check_text(what, v)
    p = Path(v).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {p} exists and is not a folder")
    return _writable_dir(p, what)


check_cache_dir = check_out_dir


# ---------------------------------------------------------------------------------------------- the CLIs
class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``error: <prog>: <message> (see --help)``, exit 2."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {self.prog}: {one_line(message)} (see --help)\n")
        raise SystemExit(2)


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give an existing parser ``OneLineParser``'s one-line usage errors (for parsers built elsewhere)."""
    parser.error = OneLineParser.error.__get__(parser)
    return parser


def _exit_code(err: BaseException) -> int:
    from .errors import CheckpointError, DivergenceError

    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, DivergenceError):
        return 1
    if isinstance(err, (ValueError, TypeError, FileNotFoundError, PermissionError, CheckpointError)):
        return 2
    return 1


def _message(err: BaseException) -> str:
    from .errors import CheckpointError, DivergenceError

    if isinstance(err, KeyboardInterrupt):   # TrainingInterrupted says where its checkpoint went
        return f"interrupted: {one_line(err)}" if str(err) else "interrupted"
    text = one_line(err)
    if isinstance(err, DivergenceError):
        return f"the run diverged: {text}"
    if isinstance(err, (ValueError, FileNotFoundError, PermissionError, CheckpointError)) and text:
        return text
    if isinstance(err, OSError) and getattr(err, "strerror", None):
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def cli_boundary(body: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``body(argv)``; any exception becomes one line on stderr and an exit code, never a traceback.

    ``--debug`` in argv (removed before ``body`` sees it) or ``NEURO_LPC_DEBUG=1`` re-raises instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if "--debug" in argv:
        argv.remove("--debug")
        debug = True
    try:
        return body(argv)
    except SystemExit as e:   # argparse: --help (0) or a usage error (2, already printed as one line)
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        raise
    except BaseException as err:  # noqa: BLE001 - the boundary: every error ends as one line
        if debug:
            raise
        hint = "" if _exit_code(err) == 2 else f" (rerun with --debug or {DEBUG_ENV}=1 for the traceback)"
        if isinstance(err, KeyboardInterrupt):
            hint = ""
        sys.stderr.write(f"error: {_message(err)}{hint}\n")
        sys.stderr.flush()
        return _exit_code(err)


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """``float(value)``, which must be finite and > 0 (>= 0 with ``allow_zero``); else a one-line ValueError.

    Unlike :func:`check_number` it takes anything ``float()`` takes (numpy scalars, 0-d tensors): the
    numeric arguments of the linear-Gaussian theory (:mod:`neuro_lpc.theory`).
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, got {value}")
    return value
