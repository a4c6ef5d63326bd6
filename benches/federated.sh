#!/usr/bin/env bash
# Federated against single-party quality on diamonds (80/20 split by shared/eval/split.py):
# the training split is cut into three equal shards held by three workers (real processes,
# mutual TLS on loopback); each holder gets the same ε as the single-party run, and the same
# expected batch fraction and number of DP-SGD steps. Both outputs are scored by
# `fedsynth evaluate` against the holdout (target `cut`).
#
#   bash benches/federated.sh [EPSILON]        (default: 3)
#
# Environment: MODEL (tvae, the default; or ctgan: the conditional GAN, in both runs),
# AGGREGATION (secagg, the default: secure aggregation with distributed noise,
# one distributed DP-SGD step per round; or none), OPTIMIZER (adam, the default: FedAdam; or
# average: FedAvg, with AGGREGATION=none), LOCAL_STEPS (1 for adam, 25 for average),
# LEARNING_RATE (0.005 for the tvae, 0.001 for ctgan), LOCAL_LEARNING_RATE (1.0), SCHEMA (public, the default: the
# single-party run's DP schema reused as public, the holders training on 90% of ε; or
# partial: names and kinds only, the holders completing the schema from their own DP
# statistics under secure aggregation with statistics_share of the same ε; or names: column
# names only, the holders deciding the kinds too, from their summed DP type counts;
# STATISTICS_SHARE, 0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/reference_eval.sh
shared=$(cd "${SHARED:-../shared}" && pwd)
py=${EVAL_PY:-$HOME/.cache/fedsynth-eval/bin/python}
[ -x "$py" ] || py=python3
eps=${1:-3}
model=${MODEL:-tvae}
if [ "$model" = ctgan ]; then lr=${LEARNING_RATE:-0.001}; else lr=${LEARNING_RATE:-0.005}; fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedsynth/target}"
# The binary of the test build: the dev profile optimises every dependency and fedsynth's
# numeric crates (see Cargo.toml), and building exactly what `cargo test --workspace` builds
# keeps one set of features, so nothing is compiled twice.
cargo test -q --workspace --locked --no-run 2> /dev/null
bin="$CARGO_TARGET_DIR/debug/fedsynth"

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
"$py" "$shared/eval/split.py" "$shared/data/diamonds.csv" --out-dir "$work" > /dev/null
train="$work/diamonds_train.csv"
holdout="$work/diamonds_holdout.csv"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# Single party: the whole table, ε per run; its schema (DP estimated) is reused as public.
start=$(date +%s.%N)
"$bin" synth --input "$train" --out "$work/single.csv" --epsilon "$eps" --seed 1 \
  --model "$model" --ledger "$work/ledger.db" --dataset single --cap 100 2> "$work/single.log"
single_s=$(echo "$(date +%s.%N) - $start" | bc)
rows=$(($(wc -l < "$train") - 1))

# Three shards.
head -1 "$train" > "$work/header"
for k in 0 1 2; do
  { cat "$work/header"; tail -n +2 "$train" | awk -v k=$k 'NR % 3 == k'; } > "$work/shard$k.csv"
done
if [ -n "${ONE_HOLDER_CLASS:-}" ]; then
  # A class held by the third holder only: color = "Z" in every 11th of its rows (3% of all).
  python3 - "$work/shard2.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], newline="")))
c = rows[0].index("color")
for i, r in enumerate(rows[1:]):
    if i % 11 == 0:
        r[c] = "Z"
csv.writer(open(sys.argv[1], "w", newline=""), lineterminator="\n").writerows(rows)
PY
fi
shard_rows=$(($(wc -l < "$work/shard0.csv") - 1))
# Same expected batch fraction (1000 of all rows) and the same number of steps (30 epochs).
batch=$(( (1000 * shard_rows + rows / 2) / rows ))
steps=$(( 30 * ( (rows + 999) / 1000 ) ))
optimizer=${OPTIMIZER:-adam}
aggregation=${AGGREGATION:-secagg}
if [ "$optimizer" = adam ]; then local_steps=${LOCAL_STEPS:-1}; else local_steps=${LOCAL_STEPS:-25}; fi
rounds=$(( (steps + local_steps - 1) / local_steps ))

cd "$work"
"$bin" certs --out certs --client h0 --client h1 --client h2 > /dev/null
"$bin" keygen --out team > /dev/null
schema_mode=${SCHEMA:-public}
if [ "$schema_mode" = partial ] || [ "$schema_mode" = names ]; then
  # Names and kinds (or names) only: everything else comes from the holders' statistics.
  python3 - single.csv.schema.toml job.schema.toml "$schema_mode" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
out = "version = 1\n"
for name, kind in re.findall(r'\[\[columns\]\]\nname = "([^"]+)"\nkind = "([^"]+)"', text):
    if not name.startswith("#"):
        out += f'\n[[columns]]\nname = "{name}"\n'
        if sys.argv[3] == "partial":
            out += f'kind = "{kind}"\n'
open(sys.argv[2], "w").write(out)
PY
else
  cp single.csv.schema.toml job.schema.toml
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > coordinator.toml <<TOML
listen = "127.0.0.1:$port"
owner_token = "bench-owner-token-000000"
poll_interval_ms = 100
[tls]
cert = "certs/coordinator.pem"
key = "certs/coordinator.key"
client_ca = "certs/ca.pem"
[[federation]]
name = "bench"
enrolment_token = "bench-federation-token-00"
TOML
"$bin" coordinator --config coordinator.toml 2> coordinator.log & pids+=($!)
for k in 0 1 2; do
  cat > h$k.toml <<TOML
coordinator = "https://localhost:$port"
federation = "bench"
name = "h$k"
enrolment_token = "bench-federation-token-00"
data = "shard$k.csv"
dataset = "diamonds"
state_dir = "state-h$k"
ledger = "state-h$k/ledger.db"
cap_epsilon = 100
cap_delta = 1e-5
[tls]
ca = "certs/ca.pem"
cert = "certs/h$k.pem"
key = "certs/h$k.key"
domain = "coordinator"
[policy]
allow_plain_aggregation = $([ "$aggregation" = none ] && echo true || echo false)
TOML
done
sleep 1
for k in 0 1 2; do "$bin" worker --config h$k.toml 2> h$k.log & pids+=($!); done
# The single-party run spent 10% of ε on the schema statistics the federation reuses as
# public: holders get the remaining 90% for training, at the same δ.
delta=$(python3 -c "print(1 / $rows ** 1.5)")
if [ "$schema_mode" != public ]; then fed_eps=$eps; else fed_eps=$(python3 -c "print(0.9 * $eps)"); fi
cat > job.toml <<TOML
name = "diamonds, three holders"
federation = "bench"
schema = "job.schema.toml"
epsilon = $fed_eps
delta = $delta
rounds = $rounds
local_steps = $local_steps
batch_size = $batch
model = "$model"
learning_rate = $lr
server_optimizer = "$optimizer"
local_learning_rate = ${LOCAL_LEARNING_RATE:-1.0}
secure_aggregation = "$aggregation"
min_workers = 3
round_deadline_s = 600
rows = $rows
recipients = ["team.pub"]
$([ "$schema_mode" != public ] && echo "statistics_share = ${STATISTICS_SHARE:-0.1}")
TOML
export FEDSYNTH_COORDINATOR="https://localhost:$port" FEDSYNTH_TOKEN="bench-owner-token-000000" FEDSYNTH_CA=certs/ca.pem
export FEDSYNTH_CLIENT_CERT=certs/owner.pem FEDSYNTH_CLIENT_KEY=certs/owner.key
start=$(date +%s.%N)
job=$("$bin" submit job.toml)
"$bin" status "$job" --watch > /dev/null
fed_s=$(echo "$(date +%s.%N) - $start" | bc)
"$bin" status "$job"
"$bin" fetch "$job" --out fetched > /dev/null
"$bin" decrypt "fetched/$job.fsx" --key team.key --out federated.csv > /dev/null

[ "$schema_mode" != public ] && "$bin" status "$job" --schema > completed.schema.toml && echo "schema completed by the holders: $(grep -c '^\[\[columns' completed.schema.toml) columns, $(grep -c 'source = "dp"' completed.schema.toml) from DP statistics"
echo "ε = $eps (single party, its schema included) / $fed_eps per holder (federated, schema: $schema_mode); single party: $rows rows, 30 epochs (${single_s%.*} s); federated ($model, $optimizer, $aggregation): 3 × $shard_rows rows, $rounds rounds × $local_steps steps at batch $batch (${fed_s%.*} s)"
if [ -n "${ONE_HOLDER_CLASS:-}" ]; then
  python3 - "$work"/shard*.csv federated.csv <<'PY'
import csv, sys
def share(paths):
    n = z = 0
    for p in paths:
        rows = csv.DictReader(open(p, newline=""))
        for r in rows:
            n += 1
            z += r["color"] == "Z"
    return z, n
z, n = share(sys.argv[1:-1])
zo, no = share(sys.argv[-1:])
print(f"class held by one holder (color = Z): {z} of {n} rows ({100 * z / n:.1f}%) in the holders' tables; {zo} of {no} ({100 * zo / no:.1f}%) in the federated output")
PY
fi
for name in single federated; do
  echo "  $name: $("$bin" evaluate --real "$train" --synth "$name.csv" --holdout "$holdout" --target cut --out "eval-$name" | sed 's/; wrote.*//')"
  reference_eval "$py" "$shared" "$train" "$holdout" "$name.csv" "ref-$name.json" "    "
done
