"""Hostile input to the four CLIs and their config / noise files (issue 10, section 6).

Every flag of every parser is enumerated from its argparse actions, every config key from the dataclass
fields, so a new flag or field is fuzzed without editing this file (a string flag nobody classified is
fuzzed as a choice, and fails here until it is classified). Each bad invocation must end before any
work (the data loader / the study's and sweep's work functions raise ``WorkStarted`` if reached) in
exactly one line ``error: ...`` on stderr and exit code 2, with nothing written to the output folder.
The CLIs run in-process (hundreds of cases in seconds); a few subprocess runs prove no traceback
reaches a terminal. ``test_valid_minimal_invocation_reaches_the_work`` is the control: the fuzz does
not pass merely because everything is refused.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import circuits.study.run as study_run
import circuits.sweep as sweep
import neuro_lpc.data
from circuits import cli as circuit_cli
from circuits.learn import CircuitTrainConfig
from neuro_lpc import cli as lpc_cli
from neuro_lpc.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


class WorkStarted(SystemExit):
    """Raised by the patched work entry points; a SystemExit with a string code passes the CLI boundary."""

    def __init__(self, what):
        super().__init__(f"WORK STARTED: {what}")


def _work(what):
    def boom(*a, **k):
        raise WorkStarted(what)
    return boom


@pytest.fixture
def no_work(monkeypatch):
    monkeypatch.setattr(neuro_lpc.data, "load_dataset", _work("load_dataset"))
    monkeypatch.setattr(study_run, "_run", _work("study"))
    monkeypatch.setattr(sweep, "run_sweeps", _work("sweeps"))


# ------------------------------------------------------------------------------------------ the CLIs
CLIS = {
    "train_lpc": (lpc_cli.train_main, lpc_cli.build_parser),
    "train_circuit": (circuit_cli.train_main, circuit_cli.build_parser),
    "run_circuit": (circuit_cli.study_main, study_run.build_parser),
    "sweep": (sweep.main, sweep.build_parser),
}


def base_args(cli: str, tmp: Path) -> list[str]:
    out = ["--out", str(tmp / "out")]
    if cli in ("train_lpc", "train_circuit"):
        return out + ["--quiet"]
    if cli == "run_circuit":
        return out + ["--cache-dir", str(tmp / "cache")]
    return out


# How a string flag is fuzzed. Default (not listed): a choice -- an unknown word must be refused.
OUT_FLAGS = {"out", "cache_dir"}                    # folders written: a path under a regular file must be refused
IN_FILE_FLAGS = {"config", "noise_config", "model"}  # files read: a missing file must be refused
FREE_TEXT = {"data_root"}                           # any word is valid (ignored by animal-mnist)
EMPTY_OK = {"skip"}                                 # "" = nothing skipped (the default)
INF_OK = {"tau_theta"}                              # inf = weights fixed during the presentation


def value_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and a.nargs != 0 and not isinstance(a, argparse._HelpAction)]


def flag_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and a.nargs == 0 and not isinstance(a, argparse._HelpAction)]


def bad_values(action: argparse.Action, tmp: Path) -> list[str]:
    name = action.dest
    typ = action.type
    if typ is int:
        return ["abc", "", "1.5", "nan", "inf", "-1", "0x10", str(10**15)]
    if typ is float or callable(typ) and typ not in (str,):   # float and custom parsers (--precondition)
        bad = ["abc", "", "nan", "-inf", "-1", "1e400" if name not in INF_OK else "-1e400"]
        if name == "precondition":
            bad += ["1", "1.0", "2", "true-ish"]
        if name not in INF_OK:
            bad.append("inf")
        return bad
    bad = [] if name in EMPTY_OK else ["", "   "]
    blocker = tmp / "a-file"
    blocker.write_text("x")
    if name in OUT_FLAGS:
        bad.append(str(blocker / "sub"))
    elif name in IN_FILE_FLAGS:
        bad.append(str(tmp / "missing.json"))
    elif name not in FREE_TEXT:
        bad.append("no-such-choice-xyz")
    return bad


def fuzz_cases(tmp: Path):
    for cli, (main, make_parser) in CLIS.items():
        parser = make_parser()
        for a in value_actions(parser):
            for v in bad_values(a, tmp):
                yield cli, [f"{a.option_strings[0]}={v}"] if v.startswith("-") else [a.option_strings[0], v]
        for a in flag_actions(parser):          # switches take no value
            yield cli, [f"{a.option_strings[0]}=1"]
        yield cli, ["--no-such-flag"]


def run_in_process(capsys, cli: str, argv: list[str]):
    capsys.readouterr()
    main, _ = CLIS[cli]
    t0 = time.perf_counter()
    rc = main(argv)
    return rc, capsys.readouterr().err, time.perf_counter() - t0


def assert_refused(rc, err, argv, out: Path):
    lines = err.strip().splitlines()
    assert rc == 2, (argv, rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert "Traceback" not in err and "WORK STARTED" not in err, (argv, err)
    assert not out.exists() or not any(out.iterdir()), (argv, sorted(p.name for p in out.iterdir()))


def test_every_flag_of_every_cli_refuses_bad_values_before_work(tmp_path, capsys, no_work):
    cases = list(fuzz_cases(tmp_path))
    covered = {cli: set() for cli in CLIS}
    slow, failed = [], []
    for cli, extra in cases:
        argv = base_args(cli, tmp_path) + extra
        # the fuzzed flag replaces the base one when both are given (argparse keeps the last)
        try:
            rc, err, wall = run_in_process(capsys, cli, argv)
            assert_refused(rc, err, argv, tmp_path / "out")
        except (AssertionError, WorkStarted) as e:
            failed.append((cli, extra, str(e)[:300]))
            continue
        covered[cli].add(extra[0].split("=")[0])
        if wall > 2.0:
            slow.append((cli, extra, wall))
    assert not failed, "\n".join(map(str, failed))
    for cli, (_, make_parser) in CLIS.items():
        every = {a.option_strings[0] for a in make_parser()._actions if a.option_strings and a.dest != "help"}
        assert every <= covered[cli], (cli, every - covered[cli])
    assert len(cases) > 300 and not slow, slow


def test_valid_minimal_invocation_reaches_the_work(tmp_path, capsys, no_work):
    """The control: each CLI's minimal valid command passes every check and starts the work."""
    for cli in CLIS:
        with pytest.raises(WorkStarted):
            CLIS[cli][0](base_args(cli, tmp_path / cli))
    # and the edges that are valid stay valid
    for cli, extra in [("train_lpc", ["--sample-grid", "0", "--prior-init-batches", "0", "--precondition", "0"]),
                       ("train_lpc", ["--config", str(_write(tmp_path / "ok.json", {"grad_clip": 1.0, "log_every": 5}))]),
                       ("train_circuit", ["--precondition", "0.5", "--online", "--tau-theta", "inf"]),
                       ("train_circuit", ["--precondition", "rms", "--tau-e", "0.002", "--dt", "0.0005"]),
                       ("run_circuit", ["--tau-e", "0.002", "--skip", ""]),
                       ("sweep", ["--sweep", "tau", "noise", "--seed", "7"])]:
        with pytest.raises(WorkStarted):
            CLIS[cli][0](base_args(cli, tmp_path / f"{cli}-edge") + extra)


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


# --------------------------------------------------------------------------------- config and noise files
def _annotation_allows_none(f: dataclasses.Field) -> bool:
    return f.default is None or "None" in str(f.type) or str(f.type) == "Any"


def bad_field_values(cls, f: dataclasses.Field) -> list:
    default = getattr(cls(), f.name)
    bad = [[1, 2], {"x": 1}]
    if not _annotation_allows_none(f):
        bad.append(None)
    if isinstance(default, bool):
        return bad + [1, "true"]
    if isinstance(default, str):
        return bad + ([1.5, ""] if f.name not in ("noise", "timescales") else [1.5, "", "no-such-preset"])
    number = isinstance(default, (int, float)) or "int" in str(f.type) or "float" in str(f.type)
    if number:
        bad += ["1", math.nan, -1, -math.inf]
        if f.name not in INF_OK:
            bad.append(math.inf)
        if "int" in str(f.type) and "float" not in str(f.type):
            bad.append(2.5)
            if f.name != "checkpoint_every_steps":   # a checkpoint interval past the run: harmless
                bad.append(10**15)          # sizes that would hang the run
        if f.name == "precondition":
            bad += [1, 1.0, 2.0]
    if f.name in ("grad_clip",):
        bad += [0, -1e-3]
    if f.name in ("log_every", "batch_size", "epochs", "sample_grid"):
        bad += [-5] + ([0] if f.name != "sample_grid" else [])
    return bad


CONFIG_CLIS = {"train_lpc": TrainConfig, "train_circuit": CircuitTrainConfig}


def test_every_config_key_refuses_bad_values_before_work(tmp_path, capsys, no_work):
    n = 0
    for cli, cls in CONFIG_CLIS.items():
        for f in dataclasses.fields(cls):
            if f.name == "method":
                continue
            for v in bad_field_values(cls, f):
                path = _write(tmp_path / f"{cli}-{f.name}.json", json.dumps({f.name: v}))
                argv = base_args(cli, tmp_path) + ["--config", str(path)]
                rc, err, _ = run_in_process(capsys, cli, argv)
                assert_refused(rc, err, (f.name, v), tmp_path / "out")
                named = err.replace("-", "_").replace(" ", "_")
                assert f.name in named or "config" in err or "noise" in err or "timescale" in err, (f.name, v, err)
                n += 1
    assert n > 250


@pytest.mark.parametrize("content", [
    "[1, 2]", '"a string"', "null", "3", "{not json", "", '{"config": [1]}', '{"no_such_key": 1}',
    '{"config": {"lr": "0.001"}}', '{"epochs": true}', '{"grad_clip": -1}', '{"log_every": 0}',
])
@pytest.mark.parametrize("cli", list(CONFIG_CLIS))
def test_malformed_config_files_are_one_line_errors(tmp_path, capsys, no_work, cli, content):
    path = _write(tmp_path / "cfg.json", content)
    rc, err, _ = run_in_process(capsys, cli, base_args(cli, tmp_path) + ["--config", str(path)])
    assert_refused(rc, err, content, tmp_path / "out")


NOISE_FILES = [
    "[1, 2]", "null", "{not json", '"loud"', '{"sources": "thermal"}', '{"sources": [{"type": "hum"}]}',
    '{"sources": [{"type": "thermal", "value_std": "0.1"}]}', '{"sources": [{"type": "thermal", "value_std": NaN}]}',
    '{"sources": [{"type": "thermal", "value_std": 1e300}]}', '{"sources": [{"type": "shot", "value_fano": 1e9}]}',
    '{"temperature": -1}', '{"temperature": "1"}', '{"timescales": "no-such"}', '{"preset": "loud"}',
]


@pytest.mark.parametrize("content", NOISE_FILES)
def test_malformed_noise_files_are_one_line_errors(tmp_path, capsys, no_work, content):
    path = _write(tmp_path / "noise.json", content)
    for cli, flag in (("train_circuit", "--noise-config"), ("train_circuit", "--noise"), ("run_circuit", "--noise-config")):
        rc, err, _ = run_in_process(capsys, cli, base_args(cli, tmp_path) + [flag, str(path)])
        assert_refused(rc, err, (cli, content), tmp_path / "out")


def test_unwritable_output_and_cache_folders_are_refused(tmp_path, capsys, no_work):
    blocker = _write(tmp_path / "file", "x")
    for cli in CLIS:
        rc, err, _ = run_in_process(capsys, cli, base_args(cli, tmp_path) + ["--out", str(blocker)])
        assert_refused(rc, err, cli, tmp_path / "out")
        assert "folder" in err


def test_project_errors_inside_the_work_are_one_line(tmp_path, capsys, monkeypatch):
    """Errors raised by the work itself (divergence, a corrupt checkpoint, a bug) also end as one line."""
    from neuro_lpc.errors import CheckpointError, DivergenceError

    for exc, rc_expected, text in ((DivergenceError("chain 3 diverged at step 7"), 1, "diverged"),
                                   (CheckpointError("checkpoint x is truncated"), 2, "truncated"),
                                   (ZeroDivisionError("division by zero"), 1, "ZeroDivisionError"),
                                   (KeyboardInterrupt(), 130, "interrupted")):
        def boom(*a, _e=exc, **k):
            raise _e
        monkeypatch.setattr(neuro_lpc.data, "load_dataset", boom)
        for cli in ("train_lpc", "train_circuit"):
            rc, err, _ = run_in_process(capsys, cli, base_args(cli, tmp_path / cli))
            lines = err.strip().splitlines()
            assert rc == rc_expected and len(lines) == 1 and text in lines[0] and "Traceback" not in err, (exc, err)
    monkeypatch.setenv("NEURO_LPC_DEBUG", "1")
    with pytest.raises(KeyboardInterrupt):
        lpc_cli.train_main(base_args("train_lpc", tmp_path / "dbg"))


# ------------------------------------------------------------------------------------ real processes
SUBPROCESS_CASES = [
    ("train_lpc.py", ["--lr", "nan"], "lr"),
    ("train_circuit.py", ["--precondition", "1"], "precondition"),
    ("run_circuit.py", ["--tau-e", "1e-9"], "unstable"),
    ("sweep.py", ["--device", "cuda:7"], "device"),
]


def test_no_traceback_reaches_the_terminal(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = []
    for script, extra, text in SUBPROCESS_CASES:
        out = tmp_path / f"{script}-{extra[0]}"
        cmd = [sys.executable, str(ROOT / "sims" / script), "--out", str(out), *extra]
        procs.append((cmd, text, out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                        env=env, cwd=tmp_path)))
    for cmd, text, out, p in procs:
        stdout, stderr = p.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert p.returncode == 2, (cmd, p.returncode, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], (cmd, stderr)
        assert "Traceback" not in stderr + stdout and not out.exists(), cmd
