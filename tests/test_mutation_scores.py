"""tools/mutation_scores.py (make mutate's table; docs/mutation.md): the Wilson interval, the sample, the score."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("mutation_scores",
                                               Path(__file__).resolve().parents[1] / "tools" / "mutation_scores.py")
ms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ms)


def test_wilson_interval_matches_published_values():
    """Wilson (1927) 95% intervals as tabulated by Newcombe (1998, Stat. Med. 17, Table II): 81/263 -> 0.2553-0.3662;
    15/148 -> 0.0624-0.1605; 0/20 -> 0-0.1611."""
    for (k, n), (lo, hi) in {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611)}.items():
        got = ms.wilson(k, n)
        assert got == pytest.approx((lo, hi), abs=6e-5)


def test_sample_is_k_per_module_in_hash_order_and_nested():
    names = [f"pkg.mod{m}.x_f__mutmut_{i}" for m in (1, 2) for i in range(30)]
    s5, s10 = ms.sample(names, 5), ms.sample(names, 10)
    assert len(s5) == 10 and sum(n.startswith("pkg.mod1.") for n in s5) == 5
    assert set(s5) <= set(s10)                                    # a larger K contains a smaller one
    assert ms.sample(names, 5, ["pkg.mod2.*"]) == [n for n in s5 if n.startswith("pkg.mod2.")]


def test_score_leaves_out_equivalents_and_cuda_only_mutants_without_cuda():
    res = {"a.m.x_f__mutmut_1": "killed", "a.m.x_f__mutmut_2": "timeout", "a.m.x_f__mutmut_3": "survived",
           "a.m.x_f__mutmut_4": "survived", "a.m.x_f__mutmut_5": "survived", "a.m.x_f__mutmut_6": "no tests"}
    eq = {"a.m.x_f__mutmut_4": "same value either way", "a.m.x_f__mutmut_5": "CUDA-only: device=None on a CPU"}
    text, surv = ms.table(res, eq, cuda=False)
    row = [ln for ln in text.splitlines() if ln.startswith("| `a.m`")][0]
    assert "| 6 | 6 | 2 (1) | 1 | 1 | 1 | 1 | 50% (below 90%) |" in row         # 2 killed of 4 live
    assert surv == ["a.m.x_f__mutmut_3: survived", "a.m.x_f__mutmut_6: no tests"]
    text, surv = ms.table(res, eq, cuda=True)                 # on CUDA the CUDA-only mutant is a survivor
    assert "a.m.x_f__mutmut_5: survived" in surv and "| 40% (below 90%) |" in text
