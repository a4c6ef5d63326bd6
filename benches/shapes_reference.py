"""The column shapes of a one-way release helped by an oracle, as a reference for a table at ε.

A reference point for `benches/tables.sh`'s "shapes" figure, from a mechanism more favoured
than fedsynth's statistics can be: every column's exact set of values is given for free (no
budget spent finding ranges, bins or categories), a chosen share of the budget (of its zCDP
ρ, so half the budget is σ·√2; default: all of it) goes to one histogram of the values per
column (Gaussian noise, all of them composed as one Gaussian mechanism of L2 sensitivity √columns, calibrated by the analytic Gaussian
mechanism's exact (ε, δ) curve, tighter than an accountant's bound), the noisy counts are
projected onto the simplex of the noisy total (least-squares post-processing: values whose
noise is small are zeroed, the total is kept), and the output holds exactly
round(share · rows) rows of each value (no sampling noise). Each column is scored as the
reference evaluator scores it (1 − KS for a numeric column, 1 − TV for one it treats as
categorical: text, at most 10 distinct values, or the target), mean over repeats.

It is not a bound: a column of many distinct values could be released better in bins (its
KS needs the cumulative shares only), and a generator's training is a second look at the
rows. It says how far the one-way statistics of a small table can go at ε, and what share of
the budget they would need to get there.

    python benches/shapes_reference.py TRAIN.csv EPSILON TARGET [--share 1] [--reps 20] [--delta 1e-5]

(TRAIN.csv: the training part of `shared/eval/split.py`; run with the evaluator's
environment, `bash ../shared/eval/setup.sh`.)
"""
import argparse
import importlib.util
import os

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import ks_2samp, norm


def evaluator():
    here = os.path.dirname(os.path.abspath(__file__))
    shared = os.environ.get("SHARED", os.path.join(here, "..", "..", "shared"))
    path = os.path.join(shared, "eval", "synth_eval.py")
    spec = importlib.util.spec_from_file_location("synth_eval", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gaussian_mu(epsilon, delta):
    """The largest μ = sensitivity/σ of a Gaussian mechanism that is (ε, δ)-DP (Balle and
    Wang's exact condition)."""
    gap = lambda mu: (norm.cdf(-epsilon / mu + mu / 2)
                      - np.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2) - delta)
    return brentq(gap, 1e-6, 100.0)


def simplex(y, total):
    """Euclidean projection of y onto {x ≥ 0, Σx = total}."""
    u = np.sort(y)[::-1]
    cs = np.cumsum(u)
    k = np.arange(1, len(y) + 1)
    last = k[u - (cs - total) / k > 0][-1]
    return np.maximum(y - (cs[last - 1] - total) / last, 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train")
    ap.add_argument("epsilon", type=float)
    ap.add_argument("target")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--share", type=float, default=1.0,
                    help="the share of the budget's zCDP rho the histograms get (default: all)")
    args = ap.parse_args()
    se = evaluator()
    raw = se.read_csv(args.train, "real")
    types = se.infer_types(raw, args.target, "classification", 10, set(), set())
    rows, cols = raw.shape
    # A share of the budget: the Gaussian mechanism's μ scales with √ρ under zCDP.
    sigma = np.sqrt(cols) / (gaussian_mu(args.epsilon, args.delta) * np.sqrt(args.share))
    rng = np.random.default_rng(0)
    scores = {}
    for c in raw.columns:
        col = raw[c]
        codes, values = pd.factorize(col, use_na_sentinel=False)
        counts = np.bincount(codes, minlength=len(values)).astype(float)
        values = np.asarray(values, dtype=object)
        # The real side of the score, once per column.
        if types[c] == "numerical":
            a = pd.to_numeric(col, errors="coerce").dropna().to_numpy()
        else:
            pr = col.astype(str).value_counts(normalize=True)
        reps = []
        for _ in range(args.reps):
            noisy = counts + rng.normal(0.0, sigma, len(counts))
            share = simplex(noisy, max(noisy.sum(), 1.0))
            share /= share.sum()
            out = pd.Series(np.repeat(values, np.round(share * rows).astype(int)))
            if types[c] == "numerical":
                b = pd.to_numeric(out, errors="coerce").dropna().to_numpy()
                reps.append(0.0 if len(b) == 0 else 1 - ks_2samp(a, b).statistic)
            else:
                ps = out.astype(str).value_counts(normalize=True)
                reps.append(1 - 0.5 * pr.sub(ps, fill_value=0).abs().sum())
        scores[c] = float(np.mean(reps))
    print(f"{os.path.basename(args.train)}: {rows} rows x {cols} columns, epsilon {args.epsilon:g}, "
          f"delta {args.delta:g}, {args.share:g} of the budget: sigma {sigma:.1f} rows per count")
    for c, s in scores.items():
        print(f"  {c:24s} {types[c]:12s} {s:.3f}")
    print(f"column shapes of the reference release: {np.mean(list(scores.values())):.3f} "
          f"(lowest column {min(scores.values()):.3f})")


if __name__ == "__main__":
    main()
