"""Reference values for fedsynth's subsampled Skellam accountant (privacy/src/skellam.rs),
written independently of it: exact integer binomials (math.comb), a max-shifted sum instead
of pairwise log-additions, and the formulas as printed in the papers.

  Skellam RDP (Agarwal, Kairouz, Liu 2021, Thm 3.5):
    eps(a) = a*D2^2/(2V) + min(((2a-1)*D2^2 + 6*D1)/(4V^2), 3*D1/(2V))
  Poisson subsampling under addition/removal (Steinke 2022), integer a >= 2:
    eps'(a) = log[(1-q)^(a-1)(1+(a-1)q) + sum_{k=2..a} C(a,k) (1-q)^(a-k) q^k e^{(k-1) eps(k)}] / (a-1)
    capped at eps(a).

Run: python3 privacy/tests/skellam_reference.py > privacy/tests/skellam_reference.json
"""
import json
import math


def skellam_rdp(a, v, l2, l1):
    return a * l2 * l2 / (2 * v) + min(((2 * a - 1) * l2 * l2 + 6 * l1) / (4 * v * v), 3 * l1 / (2 * v))


def subsampled(q, a, v, l2, l1):
    logs = [(a - 1) * math.log1p(-q) + math.log(1 + (a - 1) * q)]
    for k in range(2, a + 1):
        logs.append(math.log(math.comb(a, k)) + (a - k) * math.log1p(-q)
                    + k * math.log(q) + (k - 1) * skellam_rdp(k, v, l2, l1))
    top = max(logs)
    total = top + math.log(sum(math.exp(x - top) for x in logs))
    return max(0.0, min(total / (a - 1), skellam_rdp(a, v, l2, l1)))


cases = []
for (sigma, sc, d) in [(1.0, 2.0 ** 19, 10 ** 6), (0.8, 1000.0, 10 ** 4), (2.5, 2.0 ** 12, 50_000), (1.2, 50.0, 100)]:
    v = (sigma * sc) ** 2
    l2 = sc + math.sqrt(d)
    l1 = math.sqrt(d) * sc + d
    for q in [0.001, 0.02, 0.3]:
        for a in [2, 3, 8, 32, 128]:
            cases.append({"variance": v, "l2": l2, "l1": l1, "q": q, "alpha": float(a),
                          "rdp": subsampled(q, a, v, l2, l1)})
print(json.dumps(cases, indent=1))
