"""The study's method table without training anything: statuses, ranking, verdict and the markdown."""
import math

from circuits.study import report as R


def _samples(fid, se=5.0, kid=0.05, kid_se=0.005, collapsed=False, reason=None, n=500):
    return {"fid": fid, "fid_se": se, "kid": kid, "kid_se": kid_se, "density": 0.5, "density_se": 0.02,
            "coverage": 0.6, "coverage_se": 0.02, "n": n, "n_real": 500, "k": 5, "collapsed": collapsed,
            "collapse_reason": reason, "label": "FID", "feature": "inception-q1"}


def _training(steps=140, per_step=20, wall=60.0, budget="same optimiser steps"):
    return {"optimiser_steps": steps, "grad_evals_per_step": per_step, "grad_evals": steps * per_step, "wall_s": wall,
            "budget": budget}


def _post(spread, lj=-1000.0):
    return {"log_joint_mean": lj, "log_joint_mean_se": 2.0, "recon_mse": 0.1, "recon_mse_se": 0.01,
            "chain_spread": spread, "chain_spread_se": 0.005, "n": 32, "sampler": "s", "preconditioner": "adam",
            "ess": {"ess": 10.0, "ess_se": 2.0, "tau": 0.01, "tau_se": 0.002, "records_per_tau": 3.0, "reliable": False,
                    "reason": "short"},
            "ess_reliable": False, "time_to_typical_set_s": 0.01}


def _report(methods):
    return {"methods": methods, "metric_key": "fid", "feature": "inception", "feature_label": "FID (Inception)",
            "noise_label": "analog", "config": {"dataset": "animal-mnist", "k": 5, "train_batches": 140, "batch_size": 64,
                                                "langevin_steps": 20, "step_size": 0.1, "precondition": 0.25,
                                                "warm_start": "jeffreys", "posterior_chains": 32, "posterior_steps": 400,
                                                "tau_z": 0.01, "tau_e": 0.0, "spread_chains": 16},
            "preconditioner": {"name": "adam", "beta": 0.25, "step_size": 0.1, "bias": {"variance_ratio": 2.3, "se": 0.01}},
            "stages": {"train: discrete": 30.0, "total": 300.0}, "wall_s": 300.0, "device": "cpu", "recordings": []}


def _table():
    m = {}
    R.add_row(m, "discrete", label="discrete LPC", kind="lpc", training=_training(), samples=_samples(300.0),
              posterior=_post(0.25))
    R.add_row(m, "circuit", label="circuit · analog", kind="circuit", training=_training(),
              samples=_samples(306.0, kid=0.052), posterior=_post(0.28, lj=-1100.0))
    R.add_row(m, "const", label="constant", kind="circuit", training=_training(), samples=_samples(
        250.0, collapsed=True, reason="constant image"))
    R.add_row(m, "boom", label="boom", kind="circuit", errors={"training": "Langevin chain diverged at step 7: ..."})
    R.add_row(m, "nanfid", label="nan FID", kind="vae", training=_training(per_step=1), samples=_samples(float("nan")))
    R.add_row(m, "vae", label="VAE · same steps", kind="vae", training=_training(per_step=1, wall=5.0),
              samples=_samples(500.0, kid=0.09))
    R.add_row(m, "skipped", label="VAE · same wall time", kind="vae", not_run="skipped (--skip)")
    return m


def test_statuses_are_decided_from_the_numbers():
    m = _table()
    assert [m[k]["status"] for k in m] == ["learned", "learned", "collapsed", "diverged", "diverged", "learned", "not run"]
    assert m["const"]["status_reason"] == "constant image" and not m["const"]["ranked"]
    assert "step 7" in m["boom"]["status_reason"] and m["boom"]["status_reason"].startswith("training")
    assert "non-finite FID" in m["nanfid"]["status_reason"]
    assert [k for k in m if m[k]["ranked"]] == ["discrete", "circuit", "vae"]
    # the samples of a row whose posterior diverged are still shown, but the row is not ranked
    row = R.add_row({}, "c", label="c", kind="circuit", samples=_samples(1.0), errors={"posterior": "circuit diverged"})
    assert row["status"] == "diverged" and not row["ranked"]
    # and the mapping is ordered: a new row is one call and lands last
    R.add_row(m, "circuit · deploy", label="circuit · deploy", kind="circuit", samples=_samples(310.0))
    assert list(m)[-1] == "circuit · deploy" and m["circuit · deploy"]["status"] == "learned"


def test_verdict_ranks_only_learned_rows_and_says_why_not():
    rep = _report(_table())
    v = R.verdict(rep)
    text = " ".join(v)
    ranking = v[0]
    # ranked by KID (x 10^3 on Inception features), within-run se for rows with one seed
    assert ranking.startswith("Ranked by KID×10³") and "constant" not in ranking and "boom" not in ranking
    assert "discrete LPC 50 ± 5 ≈ circuit · analog 52 ± 5 < VAE · same steps 90 ± 5" in ranking
    assert "circuit · analog matches discrete LPC within the error bars (KID×10³ 52 ± 5 (within-run (one seed))" in text
    assert "its posterior is 12% wider" in text                   # 0.28 / 0.25
    assert "100.0 ± 2.8 nats lower in log p(x, z)" in text
    assert "The samples of constant collapsed (constant image): not ranked." in text
    assert "boom diverged (training: Langevin chain diverged at step 7" in text and "not ranked" in text
    assert "VAE · same wall time was not run (skipped (--skip))." in text
    assert ("Against VAE · same steps (same optimiser steps: 140 optimiser steps, 5 s): discrete LPC is better than "
            "VAE · same steps by 40 ± 7 in KID×10³") in text


def test_a_difference_beyond_the_error_bars_is_called_so():
    m = {}
    R.add_row(m, "discrete", label="discrete LPC", kind="lpc", samples=_samples(300.0, se=5.0))
    R.add_row(m, "circuit", label="circuit · analog", kind="circuit", samples=_samples(330.0, se=5.0, kid=0.08))
    v = " ".join(R.verdict(_report(m)))
    # KID 0.030 apart with a combined se of 0.00707: more than 2 se (shown x 10^3)
    assert "circuit · analog is worse than discrete LPC by 30 ± 7 in KID×10³ (KID×10³ 80 ± 5" in v
    assert "discrete LPC 50 ± 5 < circuit · analog 80 ± 5" in v
    # within 2 combined se it is never "better" or "worse"
    m2 = {}
    R.add_row(m2, "discrete", label="discrete LPC", kind="lpc", samples=_samples(300.0, kid=0.050))
    R.add_row(m2, "circuit", label="circuit · analog", kind="circuit", samples=_samples(330.0, kid=0.064))
    v2 = " ".join(R.verdict(_report(m2)))
    assert "circuit · analog matches discrete LPC within the error bars" in v2 and "worse than" not in v2


def test_markdown_first_table_status_column_and_uncertainties():
    md = R.render_markdown(_report(_table())).splitlines()
    assert md[0].startswith("| method | status | seeds | KID×10³ ↓ (ranking) | FID ↓ (pooled, within-run se) | density ↑ | "
                            "coverage ↑ | n | curve at the end | optimiser steps | grad evals | train wall s |")
    rows = {ln.split(" | ")[0][2:]: ln for ln in md[2:9]}
    assert ("| learned | – | 50 ± 5 (within-run (one seed)) | 300 ± 5 | 0.500 ± 0.020 | 0.600 ± 0.020 | 500 | – | 140 | "
            "2,800 | 60 |") in rows["discrete LPC"]
    assert "collapsed (not ranked)" in rows["constant"] and "diverged (not ranked)" in rows["boom"]
    assert "| not run |" in rows["VAE · same wall time"]
    assert md[9] == "" and md[10].startswith("Ranked by KID")            # the verdict right under the table
    text = "\n".join(md)
    assert "unreliable (3 records per τ)" in text                          # ESS only where reliable
    assert "variance ratio chain / posterior 2.300 ± 0.010" in text          # the default preconditioner's bias
    assert "| train: discrete | 30.0 |" in text


def test_formatting_helpers():
    assert R.pm(float("nan"), 1.0) == "–" and R.pm(3.0, None) == "3" and R.pm(1234.5, 12.0) == "1,234 ± 12"
    assert R.pm(-15340.2, 1842.5, 5) == "-15,300 ± 1,800" and R.pm(0.0512, 0.0049) == "0.051 ± 0.005"
    assert R.pm(100.04, 2.83) == "100.0 ± 2.8" and R.pm(300.2, 5.0) == "300 ± 5" and R.pm(2.0, 0.98) == "2.0 ± 1.0"
    p = _post(0.3)
    p.update(ess_reliable=True, ess_per_unit_time=120.0, ess_per_unit_time_se=11.0)
    assert R.ess_cell(p) == "120 ± 11"
    assert math.isnan(float("nan"))


def test_report_names_the_circuit_rows_sampler_family_when_not_overdamped():
    """--dynamics: the report says which family the circuit rows ran, with its parameters; the default (the paper's
    overdamped chain) adds no line."""
    rep = _report(_table())
    assert "Sampler family" not in R.render_markdown(rep)
    rep["config"].update(dynamics="underdamped", friction=2.0, mass=0.5, skew=None, skew_scale=1.0)
    line = [ln for ln in R.render_markdown(rep).splitlines() if ln.startswith("- Sampler family")]
    assert len(line) == 1 and "**underdamped**" in line[0] and "γ_f = 2.0" in line[0] and "M = 0.5" in line[0]
    rep["config"].update(dynamics="nonreversible", skew="random", skew_scale=0.3)
    line = [ln for ln in R.render_markdown(rep).splitlines() if ln.startswith("- Sampler family")]
    assert len(line) == 1 and "**nonreversible**" in line[0] and "`random` skew, scale 0.3" in line[0]


def test_report_explains_the_in_memory_local_row_when_it_runs():
    """--learning all (or naming in-memory-local): one line with the row's decoder rate (--local-lr), the Adam rate
    of the rest, and its noise without feedback_mismatch; other learning lists add none."""
    rep = _report(_table())
    for learning in ("hardware-aware,deploy", "in-memory"):
        rep["config"].update(learning=learning, local_lr=1e-4, lr=2e-3)
        assert "in-memory-local row" not in R.render_markdown(rep)
    for learning in ("all", "deploy, in-memory-local"):
        rep["config"].update(learning=learning, local_lr=5e-5, lr=2e-3)
        line = [ln for ln in R.render_markdown(rep).splitlines() if ln.startswith("- The in-memory-local row")]
        assert len(line) == 1 and "decoder rate 5e-05" in line[0] and "Adam at 0.002" in line[0]
        assert "without `feedback_mismatch`" in line[0]
