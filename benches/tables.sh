#!/usr/bin/env bash
# `fedsynth synth` on every table of shared/data at each ε: 80/20 split (shared/eval/split.py),
# fit + sample on the training part with default settings, scored against the holdout by the
# reference evaluator (shared/eval/synth_eval.py) on the table's utility target. A refused
# run is reported with its one-line reason: every row of the table is printed, not the best.
#
#   bash benches/tables.sh [EPSILON ...]        (default: 1 3)
#
# Needs ../shared beside the repository and the evaluator's environment
# (bash ../shared/eval/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared}
py=${EVAL_PY:-$HOME/.cache/fedsynth-eval/bin/python}
epsilons=("$@")
[ ${#epsilons[@]} -gt 0 ] || epsilons=(1 3)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedsynth/target}"
cargo test -q --workspace --locked --no-run 2> /dev/null
bin="$CARGO_TARGET_DIR/debug/fedsynth"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -A target=([diamonds]=cut [wage]=jobclass [psid1976]=participation [caravan]=Purchase
  [flights]=origin [nmes1988]=insurance)
echo "machine: $(nproc) cores"
echo "| table | ε | fit + sample | column shapes | pair trends | 3-way error | TSTR AUC (HGB) | TRTR AUC |"
echo "|---|---|---|---|---|---|---|---|"
for t in diamonds wage psid1976 caravan nmes1988 flights; do
  "$py" "$shared/eval/split.py" "$shared/data/$t.csv" --out-dir "$work" > /dev/null
  for eps in "${epsilons[@]}"; do
    out="$work/${t}_eps$eps.csv"
    start=$(date +%s.%N)
    if "$bin" synth --input "$work/${t}_train.csv" --out "$out" --epsilon "$eps" \
        --ledger "$work/ledger.db" --dataset "$t-$eps" --cap 100 2> "$work/log"; then
      secs=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
      "$py" "$shared/eval/synth_eval.py" --real "$work/${t}_train.csv" \
        --holdout "$work/${t}_holdout.csv" --synth "$out" --target "${target[$t]}" \
        --out "$work/eval.json" > /dev/null 2>&1
      "$py" - "$work/eval.json" "$t" "$eps" "$secs" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
h = d["headline"]
trtr = h.get("trtr_hgb_roc_auc", float("nan"))
print("| %s | %s | %s s | %.3f | %.3f | %.3f | %.3f | %.3f |" % (sys.argv[2], sys.argv[3], sys.argv[4],
      h["shapes_own"], h["pair_trends_own"], h["3way_err"], h["tstr_hgb_roc_auc"], trtr))
PY
    else
      echo "| $t | $eps | refused: $(tail -1 "$work/log" | cut -c1-140) | | | | | |"
    fi
  done
done
