# Sourced by the end-to-end benchmark scripts: scores a synthetic table with the reference
# evaluator (shared/eval/synth_eval.py) when its Python environment exists, one line.
#
#   reference_eval PY SHARED TRAIN HOLDOUT SYNTH OUT_JSON INDENT
reference_eval() {
  local py=$1 shared=$2 train=$3 holdout=$4 synth=$5 out=$6 indent=$7
  "$py" -c "import sdmetrics, sklearn" 2> /dev/null || return 0
  "$py" "$shared/eval/synth_eval.py" --real "$train" --holdout "$holdout" --synth "$synth" --target cut \
    --out "$out" > /dev/null 2>&1
  "$py" - "$out" "$indent" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))["headline"]
print("%sreference evaluator: column shapes %.3f, pair trends %.3f, 3-way error %.3f, TSTR AUC (HGB) %.3f, DCR p5 %.3f"
      % (sys.argv[2], h["shapes_own"], h["pair_trends_own"], h["3way_err"], h["tstr_hgb_roc_auc"], h["dcr_p5"]))
PY
}
