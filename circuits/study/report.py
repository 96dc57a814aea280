"""The method table (rows with a status), the verdict paragraph and report.md.

``report["methods"]`` is an ordered mapping name -> row; :func:`add_row` adds one (training, samples,
posterior, errors) and decides its status from the numbers:

* ``not run``   -- the row was skipped (``--skip``) or cannot run in this configuration (reason given);
* ``diverged``  -- a DivergenceError in its training or its posterior sampling, non-finite samples, or a
                   non-finite sample-quality number;
* ``collapsed`` -- ``evaluate_samples`` flagged its samples (``collapsed``, with ``collapse_reason``);
* ``learned``   -- otherwise.

Only ``learned`` rows are ranked.  Two numbers "match within their error bars" when their difference is
at most ``TIE_SE`` = 2 combined standard errors (sqrt(se_a^2 + se_b^2)).
"""
from __future__ import annotations

import math

LEARNED, COLLAPSED, DIVERGED, NOT_RUN, REFERENCE = "learned", "collapsed", "diverged", "not run", "reference"
STATUSES = (LEARNED, COLLAPSED, DIVERGED, NOT_RUN, REFERENCE)
TIE_SE = 2.0
RANK_KEY = "kid"     # the ranking metric: KID, unbiased at any n, so seeds with few samples each still average right


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def decide_status(row: dict, metric_key: str | None = None) -> tuple[str, str | None]:
    """(status, reason) of a row from its numbers (module docstring)."""
    if row.get("not_run"):
        return NOT_RUN, row["not_run"]
    errors = row.get("errors") or {}
    for stage in ("training", "samples", "posterior"):
        if errors.get(stage):
            return DIVERGED, f"{stage}: {errors[stage].splitlines()[0]}"
    s = row.get("samples") or {}
    if s.get("collapsed"):
        return COLLAPSED, s.get("collapse_reason") or "samples flagged as collapsed"
    keys = [metric_key] if metric_key else [k for k in ("fid", "fd") if k in s]
    for k in keys:
        if k in s and not _finite(s[k]):
            return DIVERGED, f"non-finite {k.upper()} ({s[k]})"
    if not s:
        return NOT_RUN, "no samples evaluated"
    return LEARNED, None


def add_row(methods: dict, name: str, *, label: str, kind: str, training: dict | None = None, samples: dict | None = None,
            posterior: dict | None = None, errors: dict | None = None, not_run: str | None = None,
            metric_key: str | None = None, notes: str | None = None) -> dict:
    """Add (or replace) the row ``name`` of the method table and decide its status: one call per row."""
    row = {"label": label, "kind": kind, "training": training, "samples": samples, "posterior": posterior,
           "errors": {k: v for k, v in (errors or {}).items() if v}, "not_run": not_run, "notes": notes}
    row["status"], row["status_reason"] = decide_status(row, metric_key)
    if kind == "reference" and row["status"] in (LEARNED, COLLAPSED):   # a reference frames the others, as it is
        row["status"] = REFERENCE
    row["ranked"] = row["status"] == LEARNED
    row["rank_metric"] = rank_metric(row)
    row["wall_s"] = (training or {}).get("wall_s", float("nan"))   # training wall time (kept for old readers)
    methods[name] = row
    return row


def rank_metric(row: dict, key: str = RANK_KEY) -> dict:
    """The row's ranking number: ``{"value", "se", "se_kind", "seeds"}`` -- the mean over its seeds with the se
    across seeds (training variance included) where it has several, else the one run's value with its within-run
    se (KID: from subsets)."""
    s = (row.get("samples") or {})
    sm = s.get("seed_mean") or {}
    seeds = s.get("seeds") or []
    if key in sm:
        return {"value": sm[key], "se": sm.get(f"{key}_se"), "se_kind": f"across {len(seeds)} seeds", "seeds": seeds}
    return {"value": s.get(key), "se": s.get(f"{key}_se"), "se_kind": "within-run (one seed)", "seeds": seeds}


def aggregate_phrase(r: dict, ref: dict) -> str | None:
    """One sentence when a row's advantage over ``ref`` comes with a narrower aggregate posterior (its encoder's
    aggregate q(z) = mean over test images of q(z|x): variance relative to the prior's, KL to the prior)."""
    a, b = (r.get("samples") or {}).get("aggregate"), (ref.get("samples") or {}).get("aggregate")
    if not a or not b or not _finite(a.get("variance_ratio")) or not _finite(b.get("variance_ratio")):
        return None
    if a["variance_ratio"] >= b["variance_ratio"]:
        return None
    return (f"{r['label']}'s advantage comes with a narrower aggregate posterior than {ref['label']}'s (its encoder's "
            f"aggregate q(z) has {_num(a['variance_ratio'])} of the prior's variance against {_num(b['variance_ratio'])}; "
            f"KL to the prior {_num(a.get('kl_to_prior'))} vs {_num(b.get('kl_to_prior'))} nats): samples drawn from the "
            f"prior then land nearer to where its decoder was trained, which lowers its distance at this budget "
            f"without a better posterior (docs/learning_modes.md).")


# ---------------------------------------------------------------------------------------- formatting
def _num(v, nd: int = 3) -> str:
    """v to nd significant figures: thousands grouped (1,234), small numbers in g-format."""
    if not _finite(v):
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10 ** nd and a < 1e12:
        return f"{v:,.0f}"
    if a < 1e-3 or a >= 1e12:
        return f"{v:.{nd}g}"
    r = float(f"{v:.{nd}g}")
    return f"{r:,.0f}" if abs(r) >= 1000 else f"{r:.{nd}g}"


def _decimals(se: float) -> int:
    """Decimal place of a standard error quoted to 1-2 significant figures (the Particle Data Group rule:
    2 figures when its leading three digits are 100-354, else 1)."""
    e = math.floor(math.log10(se))
    lead = int(se / 10 ** (e - 2))       # three leading digits, 100..999
    sig = 2 if lead < 355 else 1
    if lead >= 950:
        e, sig = e + 1, 2
    return -(e - sig + 1)


def pm(v, se, nd: int = 3) -> str:
    """'v ± se', both rounded to the se's precision ('v' alone when se is unknown, '–' when v is)."""
    if not _finite(v):
        return "–"
    if not _finite(se) or se < 0:
        return _num(v, nd)
    if se == 0:                         # an uncertainty was estimated and is zero (e.g. no sample inside any ball)
        return f"{_num(v, nd)} ± 0"
    d = _decimals(se)
    if d > 6 or abs(v) >= 1e12:        # precision beyond a fixed-point display: significant figures instead
        return f"{_num(v, nd)} ± {_num(se, 2)}"
    dd = max(d, 0)
    vr, sr = round(v, d), round(se, d)
    return f"{vr:,.{dd}f} ± {sr:,.{dd}f}"


def metric_cell(s: dict | None, key: str, nd: int = 3) -> str:
    s = s or {}
    return pm(s.get(key), s.get(f"{key}_se"), nd)


def ess_cell(p: dict) -> str:
    """ESS per unit time with its se where reliable; otherwise why not."""
    ess = p.get("ess") or {}
    if p.get("ess_reliable"):
        return pm(p.get("ess_per_unit_time"), p.get("ess_per_unit_time_se"))
    rpt = ess.get("records_per_tau")
    return f"unreliable ({_num(rpt, 2)} records per τ)" if _finite(rpt) else "unreliable"


def tau_cell(p: dict) -> str:
    if p.get("ess_reliable"):
        return pm(p.get("autocorr_time_s"), p.get("autocorr_time_s_se"))
    return "unreliable"


# ------------------------------------------------------------------------------------------- verdict
def _compare(a: dict, b: dict, key: str) -> tuple[str, float, float] | None:
    """('matches' | 'better' | 'worse', diff, se) of a against b on a lower-is-better metric."""
    va, vb = a.get(key), b.get(key)
    if not (_finite(va) and _finite(vb)):
        return None
    sa, sb = a.get(f"{key}_se"), b.get(f"{key}_se")
    se = math.hypot(sa if _finite(sa) else 0.0, sb if _finite(sb) else 0.0)
    diff = va - vb
    if abs(diff) <= TIE_SE * se:
        return "matches", diff, se
    return ("better" if diff < 0 else "worse"), diff, se


def _phrase(who: str, other: str, cmp, key_label: str, a: dict, b: dict, key: str) -> str:
    """'<who> matches <other> within its error bars on FID (a vs b)' or '<who> is worse than <other> on FID by d ± se (...)'."""
    word, diff, se = cmp
    nums = f"{pm(a.get(key), a.get(key + '_se'))} vs {pm(b.get(key), b.get(key + '_se'))}"
    if word == "matches":
        return f"{who} matches {other} within its error bars on {key_label} ({nums})"
    return f"{who} is {word} than {other} on {key_label} by {pm(abs(diff), se)} ({nums})"


def _phrase_again(cmp, key_label: str, a: dict, b: dict, key: str) -> str:
    """The same comparison on a second metric, as a clause ('on KID it matches within the error bars (...)')."""
    word, diff, se = cmp
    nums = f"{pm(a.get(key), a.get(key + '_se'))} vs {pm(b.get(key), b.get(key + '_se'))}"
    if word == "matches":
        return f"on {key_label} it matches within the error bars ({nums})"
    return f"on {key_label} it is {word} by {pm(abs(diff), se)} ({nums})"


def _posterior_phrase(p: dict, ref: dict) -> str | None:
    parts = []
    sa, sb = p.get("chain_spread"), ref.get("chain_spread")
    if _finite(sa) and _finite(sb) and sb > 0:
        ratio = sa / sb
        se_a, se_b = p.get("chain_spread_se") or 0.0, ref.get("chain_spread_se") or 0.0
        rse = ratio * math.hypot(se_a / sa if sa > 0 else 0.0, se_b / sb)
        pct = 100 * (ratio - 1)
        nums = f"chain spread {pm(sa, se_a)} vs {pm(sb, se_b)}, ratio {pm(ratio, rse)}"
        if abs(ratio - 1) > TIE_SE * rse:
            parts.append(f"its posterior is {abs(pct):.0f}% {'wider' if pct > 0 else 'narrower'} ({nums})")
        else:
            parts.append(f"its posterior has the same width within the error bars ({nums})")
    la, lb = p.get("log_joint_mean"), ref.get("log_joint_mean")
    if _finite(la) and _finite(lb):
        se = math.hypot(p.get("log_joint_mean_se") or 0.0, ref.get("log_joint_mean_se") or 0.0)
        d = la - lb
        if abs(d) <= TIE_SE * se:
            parts.append(f"its chains reach the same log p(x, z) within the error bars ({pm(la, p.get('log_joint_mean_se'))})")
        else:
            parts.append(f"its chains sit {pm(abs(d), se)} nats {'higher' if d > 0 else 'lower'} in log p(x, z)")
    return " and ".join(parts) if parts else None


def _rank_cmp(a: dict, b: dict) -> tuple[str, float, float] | None:
    """('matches' | 'better' | 'worse', diff, se) of row a against row b on their ranking numbers (lower is better)."""
    ra, rb = a["rank_metric"], b["rank_metric"]
    return _compare({"v": ra["value"], "v_se": ra["se"]}, {"v": rb["value"], "v_se": rb["se"]}, "v")


def kid_scale(report: dict) -> tuple[float, str]:
    """(scale, label) of KID in the tables: ×10³ on Inception features (values ~1e-3..1), as is on others."""
    return (1e3, "KID×10³") if report.get("metric_key") == "fid" else (1.0, "KID")


def _rank_cell(row: dict, scale: float = 1e3) -> str:
    r = row["rank_metric"]
    if not _finite(r["value"]):
        return "–"
    return pm(r["value"] * scale, (r["se"] * scale) if _finite(r["se"]) else None)


def _rank_phrase(who: dict, other: dict, scale: float = 1e3, label: str = "KID×10³") -> str | None:
    c = _rank_cmp(who, other)
    if c is None:
        return None
    word, diff, se = c
    nums = (f"{label} {_rank_cell(who, scale)} ({who['rank_metric']['se_kind']}) vs {_rank_cell(other, scale)} "
            f"({other['rank_metric']['se_kind']})")
    if word == "matches":
        return f"{who['label']} matches {other['label']} within the error bars ({nums})"
    return f"{who['label']} is {word} than {other['label']} by {pm(abs(diff) * scale, se * scale)} in {label} ({nums})"


def _seed_fid_clause(r: dict, ref: dict, key: str) -> str | None:
    """FID at the per-seed n, mean ± se across seeds, of two seeded rows."""
    a, b = (r.get("samples") or {}).get("seed_mean") or {}, (ref.get("samples") or {}).get("seed_mean") or {}
    if key not in a or key not in b or a.get("n_per_seed") != b.get("n_per_seed"):
        return None
    c = _compare(a, b, key)
    if c is None:
        return None
    word, diff, se = c
    nums = f"{pm(a[key], a.get(key + '_se'))} vs {pm(b[key], b.get(key + '_se'))} at n = {a['n_per_seed']} per seed"
    if word == "matches":
        return f"on {key.upper()} it matches within the error bars ({nums})"
    return f"on {key.upper()} it is {word} by {pm(abs(diff), se)} ({nums})"


def verdict(report: dict) -> list[str]:
    """Plain-words findings, each generated from the table's numbers and their standard errors.

    Rows are ranked by KID (``rank_metric``: the mean over seeds ± the se across seeds where a row has several);
    "better" / "worse" only beyond ``TIE_SE`` combined se, else "matches" (or ≈ in the ranking).  A row still
    improving at the end of its budget is named, with its rank a statement about this budget only; a row whose
    advantage comes with a narrower aggregate posterior is named too."""
    m, key = report["methods"], report["metric_key"]
    scale, klabel = kid_scale(report)
    out = []
    if report.get("budget") == "quick":
        out.append("Budget quick: these models are not trained enough to rank; the ranking below only shows the "
                   "report's machinery.")
    ranked = sorted(((n, r) for n, r in m.items() if r["ranked"] and _finite(r["rank_metric"]["value"])),
                    key=lambda nr: nr[1]["rank_metric"]["value"])
    if ranked:
        out.append(_ranking_sentence(ranked, scale, klabel))
    refs = {n: r for n, r in m.items() if r["kind"] == "reference" and _finite(r["rank_metric"]["value"])}
    if refs:
        out.append(_references_sentence(refs, ranked, scale))
    improving = _still_improving(m)
    if improving:
        out.append(f"Still improving at the end of the budget ({report.get('curve_metric', 'KID')} over the last "
                   f"doubling of training, beyond 2 se): {'; '.join(improving)}: "
                   f"{'its rank is' if len(improving) == 1 else 'their ranks are'} a statement about this budget only.")
    ref = m.get("discrete")
    if ref and ref["ranked"]:
        out += _circuit_vs_reference(m, ref, key, scale, klabel)
        out += _baselines_vs_reference(m, ref, scale, klabel)
    elif ref is not None:
        out.append(f"{ref['label']} is {ref['status']}: there is no reference for the comparisons.")
    return out + _unranked_sentences(m)


def _ranking_sentence(ranked: list, scale: float, klabel: str) -> str:
    """The ranked rows, best first: "A x < B y ≈ C z" (≈: within ``TIE_SE`` combined se of the row before)."""
    chain = f"{ranked[0][1]['label']} {_rank_cell(ranked[0][1], scale)}"
    for (_, prev), (_, cur) in zip(ranked, ranked[1:]):
        c = _rank_cmp(cur, prev)
        chain += f" {'≈' if c and c[0] == 'matches' else '<'} {cur['label']} {_rank_cell(cur, scale)}"
    return (f"Ranked by {klabel} (lower is better; ± across seeds where a row has several, else within-run; ≈: "
            f"within {TIE_SE:g} combined standard errors): {chain}.")


def _references_sentence(refs: dict, ranked: list, scale: float) -> str:
    """The references (data floor, untrained ceiling) and the ranked rows not better than the untrained model."""
    floor, ceil = refs.get("data"), refs.get("untrained")
    bits = [f"{r['label']} {_rank_cell(r, scale)}" for r in refs.values()]
    line = "References at the same n: " + "; ".join(bits) + "."
    if floor and ceil:
        above = [r["label"] for _, r in ranked if _rank_cmp(r, ceil) and _rank_cmp(r, ceil)[0] != "better"]
        if above:
            line += f" Not better than the untrained model: {', '.join(above)} (no learning measured)."
        else:
            line += " Every ranked row sits below the untrained ceiling."
    return line


def _still_improving(m: dict) -> list[str]:
    """"label (change ± se from step a to step b)" of each ranked row whose learning curve was still improving."""
    improving = []
    for n, r in m.items():
        tr = r.get("training") or {}
        if r["ranked"] and tr.get("convergence_status") == "still improving":
            ch = next((p["convergence"] for p in tr.get("per_seed", []) if (p.get("convergence") or {}).get("status")
                       == "still improving"), tr.get("convergence") or {})
            improving.append(f"{r['label']} ({pm(ch.get('change') or 0, ch.get('change_se') or 0)} from step "
                             f"{ch.get('from_step')} to {ch.get('to_step')})")
    return improving


def _circuit_vs_reference(m: dict, ref: dict, key: str, scale: float, klabel: str) -> list[str]:
    """Each ranked circuit row against discrete LPC: rank, per-seed FID, posterior on the same model, and the
    aggregate-posterior sentence where the circuit row ranks better."""
    out = []
    for name, r in m.items():
        if name == "discrete" or not r["ranked"] or r["kind"] not in ("circuit",):
            continue
        bits = [b for b in (_rank_phrase(r, ref, scale, klabel), _seed_fid_clause(r, ref, key)) if b]
        pp = (r.get("posterior") and ref.get("posterior")) and _posterior_phrase(r["posterior"], ref["posterior"])
        if pp:
            pp = "on the same model (discrete LPC's), " + pp
        if bits or pp:
            out.append("; ".join(bits + ([pp] if pp else [])) + ".")
        out += _aggregate_if_better(r, ref)
    return out


def _aggregate_if_better(r: dict, ref: dict) -> list[str]:
    """The aggregate-posterior sentence for a row that ranks better than the reference (none otherwise)."""
    c = _rank_cmp(r, ref)
    ag = aggregate_phrase(r, ref) if c and c[0] == "better" else None
    return [ag] if ag else []


def _baselines_vs_reference(m: dict, ref: dict, scale: float, klabel: str) -> list[str]:
    """Discrete LPC against each ranked VAE / PC row (with that row's budget), and the aggregate-posterior sentence
    where the baseline ranks better."""
    out = []
    for name, r in m.items():
        if r["kind"] in ("vae", "pc") and r["ranked"]:
            ph = _rank_phrase(ref, r, scale, klabel)
            if ph:
                tr = r.get("training") or {}
                out.append(f"Against {r['label']} ({tr.get('budget', '')}: {_num(tr.get('optimiser_steps'))} optimiser "
                           f"steps, {_num(tr.get('wall_s'), 3)} s): {ph}.")
            out += _aggregate_if_better(r, ref)
    return out


def _unranked_sentences(m: dict) -> list[str]:
    """Why each collapsed, diverged or not-run row is not ranked."""
    out = []
    for name, r in m.items():
        if r["status"] == COLLAPSED:
            out.append(f"The samples of {r['label']} collapsed ({r['status_reason']}): not ranked.")
        elif r["status"] == DIVERGED:
            out.append(f"{r['label']} diverged ({r['status_reason']}): not ranked.")
        elif r["status"] == NOT_RUN:
            out.append(f"{r['label']} was not run ({r['status_reason']}).")
    return out


# ------------------------------------------------------------------------------------------ markdown
def first_table(report: dict) -> list[str]:
    m, key = report["methods"], report["metric_key"]
    scale, klabel = kid_scale(report)
    lines = [f"| method | status | seeds | {klabel} ↓ (ranking) | {key.upper()} ↓ (pooled, within-run se) | density ↑ | "
             f"coverage ↑ | n | curve at the end | optimiser steps | grad evals | train wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in m.items():
        s, tr = r.get("samples") or {}, r.get("training") or {}
        status = r["status"] + ("" if r["ranked"] or r["status"] in (NOT_RUN, REFERENCE) else " (not ranked)")
        seeds = s.get("seeds") or tr.get("seeds") or []
        rk = r.get("rank_metric") or rank_metric(r)
        rank = (_rank_cell(dict(r, rank_metric=rk), scale) + (f" ({rk['se_kind']})" if _finite(rk["value"]) else ""))
        conv = tr.get("convergence_status") or (tr.get("convergence") or {}).get("status") or "–"
        lines.append(f"| {r['label']} | {status} | {len(seeds) if seeds else '–'} | {rank} | {metric_cell(s, key)} | "
                     f"{metric_cell(s, 'density')} | {metric_cell(s, 'coverage')} | {_num(s.get('n'))} | {conv} | "
                     f"{_num(tr.get('optimiser_steps'))} | {_num(tr.get('grad_evals'))} | {_num(tr.get('wall_s'), 3)} |")
    return lines


def posterior_table(report: dict) -> list[str]:
    lines = ["| sampler row | sampler | preconditioner | log p(x,z) ↑ | recon MSE ↓ | chain spread | autocorr time s | "
             "ESS / s per chain ↑ | time to typical set s | n chains |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        p = r.get("posterior")
        if not p:
            continue
        if "diverged" in p:
            lines.append(f"| {r['label']} | {p.get('sampler', '')} | {p.get('preconditioner', '')} | diverged at step "
                         f"{p.get('diverged_step')} | – | – | – | – | – | – |")
            continue
        lines.append(f"| {r['label']} | {p.get('sampler', '')} | {p.get('preconditioner', '')} | "
                     f"{pm(p.get('log_joint_mean'), p.get('log_joint_mean_se'), 5)} | {pm(p.get('recon_mse'), p.get('recon_mse_se'))} | "
                     f"{pm(p.get('chain_spread'), p.get('chain_spread_se'))} | {tau_cell(p)} | {ess_cell(p)} | "
                     f"{_num(p.get('time_to_typical_set_s'))} | {_num(p.get('n'))} |")
    return lines


def _precond_line(report: dict) -> str:
    pc = report.get("preconditioner") or {}
    if pc.get("name") in (None, "none"):
        return "- Preconditioner of the posterior rows: none (plain ULA)."
    line = (f"- Preconditioner of the posterior rows: `{pc['name']}` (β = {pc.get('beta')}, γ = {pc.get('step_size')}; "
            f"{pc.get('note', '')}).")
    b = pc.get("bias")
    if b and _finite(b.get("variance_ratio")):
        line += (f" Its measured stationary bias at this β and γ (`neuro_lpc.preconditioning.preconditioner_bias`, "
                 f"linear-Gaussian posteriors): variance ratio chain / posterior {pm(b['variance_ratio'], b.get('se'))}.")
    else:
        line += f" Stationary bias: {pc.get('bias_note', 'not measured')}."
    return line


def _dynamics_line(c: dict) -> list[str]:
    """A line on the circuit rows' sampler family when it is not the paper's overdamped Langevin (``--dynamics``)."""
    fam = c.get("dynamics") or "overdamped"
    if fam == "overdamped":
        return []
    if fam == "nonreversible":
        what = (f"non-reversible: τ_z dz = (G + J) s dt + √(2Tτ_z G) dW with a constant antisymmetric J "
                f"(`{c.get('skew')}` skew, scale {c.get('skew_scale')}): the same stationary law, probability currents")
    else:
        what = (f"underdamped: momentum units v beside the value units (friction γ_f = {c.get('friction')}, mass "
                f"M = {c.get('mass')}), stationary law p(z | x) ⊗ N(0, T M)")
    return [f"- Sampler family of the circuit rows: **{fam}** ({what}); the discrete rows keep the paper's "
            f"overdamped chain, so τ and ESS in the table above compare the two families on the same model "
            f"(docs/circuits_dynamics.md; `sims/sweep.py --sweep dynamics` measures speed against dissipation)."]


def _local_line(c: dict) -> list[str]:
    """A line on the in-memory-local row (``--learning`` naming it, or all): what trains it and what it reads."""
    modes = str(c.get("learning", ""))
    if modes != "all" and "in-memory-local" not in [m.strip() for m in modes.split(",")]:
        return []
    return [f"- The in-memory-local row learns on the arrays themselves: each decoder weight matrix is written only by "
            f"its array's local pulsed outer-product rule (aihwkit's stochastic pulse trains, BL 31) at the decoder "
            f"rate {c.get('local_lr')} (`--local-lr`: the rule is plain SGD with no per-weight state, and Adam's rate "
            f"diverges there); the encoder and σ keep Adam at {c.get('lr')}. Its noise is the run's without "
            f"`feedback_mismatch`: such an array reads its own transpose for the error feedback. Its digital twin and "
            f"the device presets: `sims/sweep.py --sweep devices` (docs/learning_modes.md)."]


def curves_table(report: dict) -> list[str]:
    """Per row: its learning curve (metric at each measured step, seed by seed), the flag at its end, and its
    encoder's aggregate posterior (variance relative to the prior's, KL to the prior) -- the properties the verdict
    reads."""
    lines = [f"| method | seed | {report.get('curve_metric', 'KID')} at optimiser step (± se) | end of the curve | "
             f"aggregate q(z) variance / prior's | KL(aggregate q(z) ‖ prior) nats |", "|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        tr, s = r.get("training") or {}, r.get("samples") or {}
        ag = s.get("aggregate") or {}
        seeds = tr.get("per_seed") or ([{"seed": tr.get("seed", "–"), "curve": tr.get("curve"),
                                         "convergence": tr.get("convergence")}] if tr.get("curve") else [])
        for i, p in enumerate(seeds):
            pts = ", ".join(f"{q['step']}: {pm(q.get('kid'), q.get('kid_se'))}" for q in (p.get("curve") or []))
            flag = (p.get("convergence") or {}).get("status", "–")
            lines.append(f"| {r['label'] if i == 0 else ''} | {p.get('seed', '–')} | {pts or '–'} | {flag} | "
                         f"{_num(ag.get('variance_ratio')) if i == 0 else ''} | {_num(ag.get('kl_to_prior')) if i == 0 else ''} |")
    return lines


def render_markdown(report: dict) -> str:
    """report.md: the table and the verdict first, then the budget, learning curves, how each number was made,
    the posterior table, divergences, run time by stage, the diagnostics, figures and recordings."""
    m = report["methods"]
    lines = first_table(report)
    lines += ["", " ".join(report.get("verdict") or verdict(report))]
    lines += ["", _budget_paragraph(report)]
    lines += ["", "## Learning curves and aggregate posteriors (`learning_curves.png`)", "", *curves_table(report)]
    lines += _methods_section(report)
    for name, r in m.items():
        for stage, msg in (r.get("errors") or {}).items():
            lines.append(f"- **{r['label']}, {stage} diverged:** {msg.splitlines()[0]}")
    lines += _run_time_section(report)
    if report.get("diagnostics"):
        from .diagnostics import render_markdown as diagnostics_markdown
        lines += ["", diagnostics_markdown(report["diagnostics"]).rstrip()]
    lines += _figures_section(report)
    return "\n".join(lines) + "\n"


def _budget_paragraph(report: dict) -> str:
    """The budget, seeds and how the ranking metric and the sample-quality numbers were computed."""
    c, rs = report["config"], report.get("real_set") or {}
    return (f"Budget `{report.get('budget', '?')}`: {c.get('train_batches')} optimiser steps per training, "
            f"{report.get('architecture', c.get('architecture'))} networks, seeds {report.get('seeds')} for the compared "
            f"rows (the ideal circuit control: its own seeds, +1000). The ranking metric is KID, mean over seeds ± the "
            f"se across seeds (training variance included); rows with one seed carry their within-run se (subsets), "
            f"labelled so. FID, density and coverage are on each row's pooled samples (n in the table) against "
            f"{rs.get('n')} real images of the {rs.get('split')} split ({rs.get('what', '')}), ± their within-run "
            f"(bootstrap) se. Features: {report.get('feature_label')}"
            + (f", path `{report['feature_path']}`" if report.get("feature_path") else "") + ".")


def _methods_section(report: dict) -> list[str]:
    """The title, the status / sample-quality / training notes, and the posterior table with its notes."""
    m, c = report["methods"], report["config"]
    n_r = next((r["samples"].get("n_real") for r in m.values() if r.get("samples") and "n_real" in r["samples"]), None)
    n_s = next((r["samples"].get("n") for r in m.values() if r.get("samples") and "n" in r["samples"]), None)
    train_rows = "; ".join(f"{r['label']}: {(r.get('training') or {}).get('budget', '–')}" for r in m.values()
                           if r.get("training"))
    return [
        "",
        f"# Circuit vs discrete LPC — noise `{report['noise_label']}`, data `{c['dataset']}`",
        "",
        f"- Status: learned / collapsed (the metrics flag the samples as constant, near-duplicate or single-mode) / "
        f"diverged (NaN/inf in training, sampling or samples) / not run; only learned rows are ranked. "
        f"Error bars: ± one standard error; two numbers match when they differ by at most {TIE_SE:g} combined standard errors.",
        f"- Sample quality: {report['feature_label']} with KID (unbiased, se from subsets), density and coverage "
        f"(k = {c['k']}) ± se; {n_s} samples per model against n = {n_r} real test images "
        f"(real-set statistics cached per data set, feature network and n).",
        f"- Training: {c['train_batches']} optimiser steps of batch {c['batch_size']} for every method unless its budget says "
        f"otherwise ({train_rows}). LPC/PC chains: T = {c['langevin_steps']} Langevin steps per batch (the paper: 300; "
        f"CPU-sized), step {c['step_size']}, preconditioning β = {c['precondition']}, warm start `{c['warm_start']}`; PC is "
        f"the same trainer at temperature 0 (deterministic gradient ascent: classic predictive coding). The circuit presents "
        f"each batch for T Euler–Maruyama steps of dt = γ·τ_z. Gradient evaluations: decoder forward+backward passes "
        f"(batches × T for LPC, PC and the circuit; batches for the VAE). The same-wall-time VAE trains until the "
        f"discrete LPC's training wall time is spent.",
        "",
        "## Posterior (same test images; rows sample the discrete-LPC model from the same warm starts, analog learning-mode rows their own model on its device)",
        "",
        *posterior_table(report),
        "",
        _precond_line(report),
        *_dynamics_line(c),
        *_local_line(c),
        f"- {c['posterior_chains']} test images, {c['posterior_steps']} steps (circuit dt = {c['step_size'] * c['tau_z']:.3g} s, "
        f"τ_z = {c['tau_z']} s, τ_e = {c['tau_e']} s{' = adiabatic error units' if not c['tau_e'] else ''}; a noise preset's "
        f"time-constant model may override them); the second half of each run is treated as stationary; log p and recon MSE "
        f"± se across chains. Time axis of the discrete chain: step · γ · τ_z. Chain spread: std across "
        f"{c['spread_chains']} chains from one shared start (0 for a noise-free circuit). Autocorrelation time and ESS "
        f"(`circuits.analysis.ess_summary`, autocorrelation pooled over the chains; the median latent unit's, per chain, "
        f"± Madras–Sokal se) are shown only where the estimator is reliable: ≥ 50 records per τ in every latent unit; "
        f"otherwise the cell says how many records per τ the worst unit had.",
    ]


def _run_time_section(report: dict) -> list[str]:
    """Wall and CPU seconds per stage, training wall time per row, work done in the training workers."""
    m = report["methods"]
    stages, cpu = report.get("stages") or {}, report.get("stages_cpu") or {}
    if not stages:
        return []
    lines = ["", "## Run time by stage", "",
             f"On {report.get('device', '?')}; training and sampling with {_num((report.get('threads') or {}).get('training_and_sampling'))} "
             f"torch thread(s) per process, {_num(report.get('train_workers', 1))} training process(es) side by side; "
             f"CPU s counts this process and its finished workers (on a shared machine nearer to the unloaded cost "
             f"than the wall time).", "", "| stage | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {_num(cpu.get(k), 4)} |" for k, v in stages.items()]
    walls = report.get("stages_training") or {}
    if walls:
        lines += ["", "Training wall time per row in this run (s; rows in workers overlap; a cached row only loads): "
                  + ", ".join(f"{m[k]['label'] if k in m else k} {v:.1f}" for k, v in walls.items()) + "."]
    wm, jobs = report.get("stages_worker_metrics") or {}, report.get("stages_worker_jobs") or {}
    if wm or jobs:
        lines += ["", "Sample features computed in the training workers right after each row trained, overlapping "
                  "the other rows' training (s): " + ", ".join(
                      [f"{m[k]['label'] if k in m else k} {v:.1f}" for k, v in wm.items()]
                      + [f"{k} {v:.1f}" for k, v in jobs.items() if v is not None]) + "."]
    return lines


def _figures_section(report: dict) -> list[str]:
    """The figures and recordings the run wrote, and the study's wall time."""
    return [
        "",
        "## Figures",
        "- `samples.png` — samples of each model",
        "- `trajectories.png` — latent trajectories on their first two principal components over log p(x, z) (paper Fig. 1/A.2)",
        "- `delta_log_joint.png` — Δ log p(x, z) during sampling (paper Fig. 3)",
        "- `log_joint.png` — log p(x, z) over time",
        "- `training.png` — training loss of every method",
        "",
        "## Recordings",
        "- " + ", ".join(f"`{f}`" for f in report.get("recordings", [])) + " — readable with `neuro_lpc.record.Trajectory.from_hdf5`",
        "",
        f"Wall time of the whole study: {report['wall_s']:.0f} s on {report['device']}.",
    ]
