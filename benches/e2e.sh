#!/usr/bin/env bash
# End-to-end benchmark of `fedsynth synth` on diamonds (80/20 split by shared/eval/split.py):
# fit + sample at each ε, wall time, peak RSS, ε spent, then `fedsynth evaluate` and, when
# its environment exists, the reference evaluator (shared/eval/synth_eval.py).
#
#   bash benches/e2e.sh [EPSILON ...]        (default: 3 1)
#
# Needs ../shared beside the repository and Python with numpy and pandas for the split
# (bash ../shared/eval/setup.sh creates ~/.cache/fedsynth-eval with everything needed).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/reference_eval.sh
shared=${SHARED:-../shared}
py=${EVAL_PY:-$HOME/.cache/fedsynth-eval/bin/python}
[ -x "$py" ] || py=python3
epsilons=("$@")
[ ${#epsilons[@]} -gt 0 ] || epsilons=(3 1)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedsynth/target}"
# The binary of the test build: the dev profile optimises every dependency and fedsynth's
# numeric crates (see Cargo.toml), and building exactly what `cargo test --workspace` builds
# keeps one set of features, so nothing is compiled twice.
cargo test -q --workspace --locked --no-run 2> /dev/null
bin="$CARGO_TARGET_DIR/debug/fedsynth"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" "$shared/eval/split.py" "$shared/data/diamonds.csv" --out-dir "$work" > /dev/null
train="$work/diamonds_train.csv"
holdout="$work/diamonds_holdout.csv"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for eps in "${epsilons[@]}"; do
  out="$work/synth_eps$eps.csv"
  /usr/bin/time -f "%e %M" -o "$work/time" \
    "$bin" synth --input "$train" --out "$out" --epsilon "$eps" --seed 0 \
      --ledger "$work/ledger.db" --dataset "diamonds-eps$eps" --cap 100 2> "$work/log"
  read -r wall rss_kb < "$work/time"
  spent=$(grep -o 'ε = [0-9.]* at δ = [0-9.e-]*' "$work/log" | tail -1)
  echo "ε=$eps: fit+sample ${wall} s, peak RSS $((rss_kb / 1024)) MiB, $spent"
  echo "  fedsynth evaluate: $("$bin" evaluate --real "$train" --synth "$out" --holdout "$holdout" --target cut --out "$work/eval$eps" | sed 's/; wrote.*//')"
  reference_eval "$py" "$shared" "$train" "$holdout" "$out" "$work/ref$eps.json" "  "
done
