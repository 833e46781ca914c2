#!/usr/bin/env bash
# The regression study over the published AlignFreeze results (see README.md in this folder).
#
#   analyses/regression_study/run.sh [RESULTS_DIR] [OUTPUT_DIR]
#
# RESULTS_DIR holds the published per-seed CSVs (<model>__opus100__<task>.csv); default
# $ALIGNFREEZE_RESULTS, else $LAYERSCOPE_TEST_DATA/alignfreeze_results, else
# ../shared/data/alignfreeze_results beside the repository. OUTPUT_DIR defaults to
# runs/regression_study (existing output directories are replaced). Set LAYERSCOPE to change how
# layerscope is called (default: "python -m layerscope"). CPU only; about 10 minutes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
default_results="${LAYERSCOPE_TEST_DATA:-$repo/../shared/data}/alignfreeze_results"
D="${1:-${ALIGNFREEZE_RESULTS:-$default_results}}"
OUT="${2:-runs/regression_study}"
read -r -a LS <<< "${LAYERSCOPE:-python -m layerscope}"

if [ ! -d "$D" ]; then
    echo "no results directory $D: pass it as the first argument or set ALIGNFREEZE_RESULTS" >&2
    exit 2
fi

# task (file name part) -> the score the paper reports
declare -A METRIC=([udpos]=accuracy [wikiann]=f1 [xnli]=accuracy [xquad]=f1)
# the PoS files hold three aligners; NER, NLI and QA were published with the dictionary only
aligners() { if [ "$1" = udpos ]; then echo "fastalign awesome dico"; else echo "dico"; fi; }
# policy -> method prefix (full realignment, front-freezing = AlignFreeze, back-freezing)
declare -A PREFIX=([full]=before_ [front]=freeze_realign_unfreeze_ [back]=freeze_realign_unfreeze_last_half_)
methods() {  # methods POLICY TASK -> comma-separated method names
    local list=""
    for a in $(aligners "$2"); do list="$list,${PREFIX[$1]}$a"; done
    echo "${list#,}"
}

for task in udpos wikiann xnli xquad; do
    files=("$D"/*__opus100__"$task".csv)  # mBERT and DistilmBERT (the NER files spell 'mutlilingual')
    metric="${METRIC[$task]}"
    echo "== $task (${#files[@]} files, metric $metric)"

    # 1. the paper's tables: every realigned method against the baseline, below/within/above
    #    counts as published (means and stds rounded to 0.1 point, compared as floats: the
    #    default) and exact
    "${LS[@]}" -q gains "${files[@]}" --metric "$metric" \
        --method "$(methods full "$task"),$(methods front "$task"),$(methods back "$task")" \
        --force -o "$OUT/gains/$task" > /dev/null

    for policy in full front back; do
        # 2. per-language gains of one policy (all its aligners), the input of the regressions
        "${LS[@]}" -q gains "${files[@]}" --metric "$metric" --method "$(methods "$policy" "$task")" \
            --no-figures --force -o "$OUT/gains-$policy/$task" > /dev/null
        # 3. gain ~ URIEL distance from English (syntactic, genetic, geographic) + block effects,
        #    with the URIEL codes of the published regression (arb, cmn, nob, fas, lav)
        "${LS[@]}" -q regress "$OUT/gains-$policy/$task/gains.csv" --codes published --force \
            -o "$OUT/regress-$policy/$task" > /dev/null
        # 4. the same with the baseline score as a predictor
        "${LS[@]}" -q regress "$OUT/gains-$policy/$task/gains.csv" --codes published \
            --formula "gain ~ syntactic + genetic + geographic + baseline + C(group)" \
            --force -o "$OUT/regress-$policy-baseline/$task" > /dev/null
    done
done

# 5. AlignFreeze with the dictionary across the four tasks and both models (one row per
#    language, model and task; a random intercept per language in the mixed model)
"${LS[@]}" -q regress "$OUT"/gains-front/{udpos,wikiann,xnli,xquad}/gains.csv --method freeze_realign_unfreeze_dico \
    --codes published --force -o "$OUT/regress-front-dico-all-tasks" > /dev/null

echo "tables:      $OUT/gains/<task>/table.txt and counts.csv"
echo "regressions: $OUT/regress-<full|front|back>[-baseline]/<task>/summary.txt"
echo "             $OUT/regress-front-dico-all-tasks/summary.txt"
