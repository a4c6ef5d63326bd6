#!/usr/bin/env bash
# `fedsynth synth` on every table of shared/data at each ε: 80/20 split (shared/eval/split.py),
# fit + sample on the training part with default settings and no schema, scored against the
# holdout by the reference evaluator (shared/eval/synth_eval.py) on the table's utility target.
# A refused run is reported with its one-line reason: every row is printed, not the best.
#
# Beside each run, two baselines on the same split:
# - "holdout": the real holdout scored as if it were synthetic (the sampling-noise floor of
#   3-way error, from the same evaluator run);
# - "independent": every column sampled on its own from the DP marginal the run released
#   (the bins, points and categories with their frequencies in OUT.schema.toml): perfect
#   independence at no extra privacy cost, the ceiling a generator must beat on 3-way error.
# Duplicates: the share of output rows that equal another output row, beside the same share in
# the real training rows.
#
#   bash benches/tables.sh [EPSILON ...]        (default: 1 3 inf)
#   TABLES="psid1976 caravan" bash benches/tables.sh 1
#   FEDSYNTH_ARGS="--model ctgan" bash benches/tables.sh 1 3   (extra flags for every run)
#   WITH_TARGET=1 bash benches/tables.sh 1 3   (each run told its table's utility target,
#                                               --target: calibrated to its two-way margins)
#   DATA=dir TABLES="a b" TARGETS="a=label b=class" bash benches/tables.sh 3
#                                              (other tables: DATA/a.csv, scored on its label;
#                                               see benches/unseen_tables.sh)
#
# Needs ../shared beside the repository and the evaluator's environment
# (bash ../shared/eval/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
py=${EVAL_PY:-$HOME/.cache/fedsynth-eval/bin/python}
epsilons=("$@")
[ ${#epsilons[@]} -gt 0 ] || epsilons=(1 3 inf)
tables=(${TABLES:-diamonds wage psid1976 caravan nmes1988 flights})
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedsynth/target}"
# FEDSYNTH_BIN: an already built fedsynth to run instead (so a build may go on meanwhile).
if [ -n "${FEDSYNTH_BIN:-}" ]; then
  bin=$FEDSYNTH_BIN
else
  cargo test -q --workspace --locked --no-run 2> /dev/null
  bin="$CARGO_TARGET_DIR/debug/fedsynth"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -A target=([diamonds]=cut [wage]=jobclass [psid1976]=participation [caravan]=Purchase
  [flights]=origin [nmes1988]=insurance)
for pair in ${TARGETS:-}; do
  target[${pair%%=*}]=${pair#*=}
done
data=${DATA:-$shared/data}
echo "machine: $(nproc) cores, $(git rev-parse --short HEAD)"
echo "| table | ε | fit + sample | peak RSS | shapes | pairs | 3-way err (holdout / independent) | TSTR HGB (TRTR) | duplicates (real) | plan |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for t in "${tables[@]}"; do
  "$py" "$shared/eval/split.py" "$data/$t.csv" --out-dir "$work" > /dev/null
  for eps in "${epsilons[@]}"; do
    out="$work/${t}_eps$eps.csv"
    start=$(date +%s.%N)
    if /usr/bin/time -f "%M" -o "$work/rss" "$bin" synth --input "$work/${t}_train.csv" --out "$out" \
        --epsilon "$eps" --ledger "$work/ledger.db" --dataset "$t-$eps" --cap 1000 ${FEDSYNTH_ARGS:-} \
        ${WITH_TARGET:+--target "${target[$t]}"} 2> "$work/log"; then
      secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
      rss=$(tail -1 "$work/rss")
      plan=$(grep -o '[0-9]*% of ε' "$work/log" | head -1)
      coarse=$(grep -c '^note: coarsened' "$work/log")
      rm -f "$work/indep.csv"
      "$py" - "$out.schema.toml" "$(wc -l < "$out")" "$work/indep.csv" <<'PY'
# Every column on its own from its released DP marginal.
import sys, tomllib, numpy as np, pandas as pd
schema = tomllib.load(open(sys.argv[1], "rb"))
n = int(sys.argv[2]) - 1
rng = np.random.default_rng(0)
cols = {}
specs = {c["name"]: c for c in schema["columns"]}
def numeric(c):
    f = np.array(c.get("frequencies") or [], float)
    e = np.array(c["edges"], float)
    pts = np.array(c.get("points") or [], float)
    k = len(e) - 1
    if f.sum() <= 0:
        f = np.concatenate([np.diff(e), np.zeros(len(pts))])
    slot = rng.choice(len(f), size=n, p=f / f.sum())
    b = np.minimum(slot, k - 1)
    v = e[b] + rng.random(n) * (e[b + 1] - e[b])
    if len(pts):
        v = np.where(slot >= k, pts[np.clip(slot - k, 0, len(pts) - 1)], v)
    if c["kind"] in ("integer", "datetime"):
        v = np.clip(np.round(v), np.ceil(e[0]), np.floor(e[-1])).astype(np.int64)
        if len(pts):
            v = np.where(slot >= k, pts[np.clip(slot - k, 0, len(pts) - 1)].astype(np.int64), v)
    return v
for c in schema["columns"]:
    f = np.array(c.get("frequencies") or [], float)
    base = c["name"].rsplit("#", 1)[0]
    if "#" in c["name"] and specs.get(base, {}).get("kind") == "datetime":
        continue  # a datetime's part: drawn with its column below
    if c["kind"] == "datetime":
        days = numeric(c)
        secs = np.zeros(n, np.int64)
        for unit, suffix in ((3600, "hour"), (60, "minute"), (1, "second")):
            part = specs.get(c["name"] + "#" + suffix)
            if part:
                secs = numeric(part).astype(np.int64) * unit
        stamps = pd.to_datetime(days * 86400 + secs, unit="s")
        fmt = c["format"].replace("%.f", "").replace("%:z", "+00:00")
        cols[c["name"]] = stamps.strftime(fmt)
        continue
    if c["kind"] in ("categorical", "id"):
        cats = c["categories"]
        w = list(f) if len(f) else [1.0] * len(cats)
        values = list(cats)
        if c["kind"] == "id":
            # The rows whose value was not released: pseudonyms from the pool, their share
            # the frequencies' last entry when there is one for them.
            pool = [f"anon-{i:016x}" for i in range(int(c.get("pseudonyms", 1)))]
            if len(w) == len(cats) + 1:
                rest = w.pop()
            else:
                rest = max(0.0, n - sum(w))
            values += pool
            w += [rest / len(pool)] * len(pool)
        w = np.array(w, float)
        cols[c["name"]] = rng.choice(values, size=n, p=w / w.sum())
        continue
    cols[c["name"]] = numeric(c)
pd.DataFrame(cols).to_csv(sys.argv[3], index=False)
PY
      for which in synth indep; do
        s=$out; [ "$which" = indep ] && s=$work/indep.csv
        "$py" "$shared/eval/synth_eval.py" --real "$work/${t}_train.csv" \
          --holdout "$work/${t}_holdout.csv" --synth "$s" --target "${target[$t]}" \
          --out "$work/eval_$which.json" --skip-privacy > /dev/null 2>&1 || echo '{}' > "$work/eval_$which.json"
      done
      "$py" - "$work" "$t" "$eps" "$secs" "$rss" "$out" "$work/${t}_train.csv" "$plan" "$coarse" <<'PY'
import json, sys, pandas as pd
work, t, eps, secs, rss, out, train, plan, coarse = sys.argv[1:]
def head(which):
    try:
        return json.load(open(f"{work}/eval_{which}.json"))["headline"]
    except Exception:
        return {}
h, ind = head("synth"), head("indep")
f = lambda d, k: "–" if d.get(k) is None else "%.3f" % d[k]
dup = pd.read_csv(out).duplicated().mean()
dup_real = pd.read_csv(train).duplicated().mean()
note = plan + (f", {coarse} coarsened" if coarse != "0" else "")
print(f"| {t} | {eps} | {secs} s | {int(rss) // 1024} MiB | {f(h, 'shapes_own')} | {f(h, 'pair_trends_own')} | "
      f"{f(h, '3way_err')} ({f(h, '3way_err_holdout_baseline')} / {f(ind, '3way_err')}) | "
      f"{f(h, 'tstr_hgb_roc_auc')} ({f(h, 'trtr_hgb_roc_auc')}) | {dup:.3f} ({dup_real:.3f}) | {note} |")
PY
    else
      echo "| $t | $eps | refused: $(tail -1 "$work/log" | cut -c1-160) | | | | | | | |"
    fi
  done
done
