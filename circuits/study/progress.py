"""What the study shows while it runs: the stage in progress and each training's steps, metric and ETA.

Trainings report ``{"row", "step", "total", "train_wall_s", "kid", "max_wall_s"}`` (``circuits.study.train.
ProgressHook``).  A training in a worker process writes its latest report to a small JSON file
(:func:`file_sink`, atomic) that the parent polls while it waits for the workers (``parallel.pretrain``); a
training in the parent reports directly.  :class:`ProgressBoard` shows them: one tqdm bar per running training on
a terminal, plain lines (``[progress] row: step/total, KID ..., ETA ...``) at most every ``every_s`` seconds per row
and when a row finishes where the output is not a terminal (a log file, CI).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def file_sink(path: Path):
    """A progress report -> ``path`` (written atomically: the parent never reads half a file)."""
    path = Path(path)

    def sink(d: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(d))
        os.replace(tmp, path)
    return sink


def eta_s(d: dict) -> float | None:
    """Seconds left of a training from its report: the steps left at the rate so far (or the wall budget left)."""
    step, total, wall = d.get("step") or 0, d.get("total") or 0, d.get("train_wall_s") or 0.0
    if d.get("max_wall_s"):
        return max(0.0, float(d["max_wall_s"]) - wall)
    if step <= 0 or total <= 0:
        return None
    return wall / step * max(0, total - step)


def _fmt_s(s) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def describe(d: dict) -> str:
    kid = d.get("kid")
    return (f"{d['row']}: step {d.get('step')}/{d.get('total')}"
            + (f", curve KID {kid:.4g}" if isinstance(kid, (int, float)) else "")
            + f", ETA {_fmt_s(eta_s(d))}")


class ProgressBoard:
    """Per-training progress on the terminal (tqdm bars) or as plain lines (module docstring)."""

    def __init__(self, log=print, tty: bool | None = None, every_s: float = 30.0):
        self.log = log
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every_s = every_s
        self.rows: dict[str, dict] = {}
        self._bars: dict = {}
        self._printed: dict[str, float] = {}

    def stage(self, name: str) -> None:
        """A new stage starts (printed as a line either way)."""
        self.log(f"[stage] {name}")

    def update(self, d: dict) -> None:
        row = d["row"]
        self.rows[row] = d
        done = d.get("total") and d.get("step", 0) >= d["total"]
        if self.tty:
            from tqdm import tqdm

            bar = self._bars.get(row)
            if bar is None:
                bar = self._bars[row] = tqdm(total=d.get("total") or None, desc=row, unit="step", leave=False,
                                             position=len(self._bars))
            bar.n = d.get("step", 0)
            kid = d.get("kid")
            bar.set_postfix_str(f"curve KID {kid:.4g}" if isinstance(kid, (int, float)) else "", refresh=False)
            bar.refresh()
            if done:
                bar.close()
                self._bars.pop(row, None)
                self.log(f"[trained] {describe(d)}")
            return
        now = time.monotonic()
        if done or now - self._printed.get(row, -1e9) >= self.every_s:
            self._printed[row] = now
            self.log(("[trained] " if done else "[progress] ") + describe(d))

    def poll(self, folder: Path) -> None:
        """Read the workers' progress files in ``folder`` and show what changed."""
        for f in Path(folder).glob("progress-*.json"):
            try:
                d = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            old = self.rows.get(d.get("row"))
            if old is None or old.get("step") != d.get("step") or old.get("kid") != d.get("kid"):
                self.update(d)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
