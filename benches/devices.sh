#!/usr/bin/env bash
# `fedsynth synth` on each training device with one seed: fit + sample wall time, and the
# same seed on the same device run twice to check that it writes the same table. Needs a
# binary of the default build (the wgpu backend is in it) and, for wgpu, a GPU adapter
# (Vulkan, Metal or DX12; a DEVICE_RUN of wgpu:software picks Mesa's lavapipe).
#
#   BIN=path/to/fedsynth bash benches/devices.sh TRAIN.csv OUT_DIR [EPSILON] [DEVICE_RUN ...]
#
# DEVICE_RUN defaults to: cpu wgpu wgpu-again. SYNTH_ARGS adds flags to every run (a larger
# model, say: "--hidden 512 --batch-size 4000"). The synthetic tables stay in OUT_DIR for
# the evaluators (benches/reference_eval.sh).
#
# A --seed never fixes the DP noise or the batch sampling (they always come from the
# operating system), so the same-table check sets the test-only switch that does; its output
# carries no privacy guarantee and is only compared, never shared.
set -uo pipefail
export FEDSYNTH_INSECURE_REPRODUCIBLE_NOISE_SEED=${FEDSYNTH_INSECURE_REPRODUCIBLE_NOISE_SEED:-0}
bin=${BIN:?set BIN to a fedsynth binary (the default build)}
train=${1:?training table}
out=${2:?output directory}
eps=${3:-3}
shift $(($# < 3 ? $# : 3))
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(cpu wgpu wgpu-again)
mkdir -p "$out"
ledgers=$(mktemp -d)
trap 'rm -rf "$ledgers"' EXIT
# RUN_TIMEOUT (seconds) bounds each run; unset, runs are not bounded.
bound=()
[ -n "${RUN_TIMEOUT:-}" ] && bound=(timeout "$RUN_TIMEOUT")

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2> /dev/null | head -1)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); GPU: ${gpu:-none found by nvidia-smi}"
for run in "${runs[@]}"; do
  device=${run%-again}
  start=$(date +%s%N)
  if "${bound[@]}" "$bin" synth --input "$train" --out "$out/$run.csv" --epsilon "$eps" --seed 0 \
    --device "$device" ${SYNTH_ARGS:-} --ledger "$ledgers/$run.db" --dataset "$run" --cap 100 \
    2> "$out/$run.log"; then
    ms=$((($(date +%s%N) - start) / 1000000))
    spent=$(grep -o 'ε = [0-9.]* at δ = [0-9.e-]*' "$out/$run.log" | tail -1)
    adapter=$(grep -m1 '^device: ' "$out/$run.log" | cut -d' ' -f2-)
    echo "$run: fit+sample $((ms / 1000)).$((ms % 1000 / 100)) s, $spent, sha256 $(sha256sum < "$out/$run.csv" | cut -c1-16)${adapter:+; $adapter}"
  else
    echo "$run: failed: $(grep -v '^\s*$' "$out/$run.log" | tail -1)"
  fi
done
for run in "${runs[@]}"; do
  [ "$run" = "${run%-again}" ] && continue
  if cmp -s "$out/${run%-again}.csv" "$out/$run.csv"; then
    echo "${run%-again}: the same seed on the same device wrote the same table"
  else
    echo "${run%-again}: the same seed on the same device wrote DIFFERENT tables"
  fi
done
