#!/usr/bin/env bash
# Evaluate each per-task map of a search on its own task with hf-act, and compare it with the
# board's baseline run of the same model. Usage (from the repository root, venv active):
#   bash searches/evaluate_task_maps.sh searches/smollm2-135m.classification smollm2-135m \
#     leaderboard/submissions/smollm2-135m-instruct.baseline.act_suite_lite.96aa53dc runs/s5/task_maps \
#     [lite|full] [own|paper|spaced]
# The fifth argument: "lite" (the default) evaluates each map on its task's lite group member,
# "full" on the task's full evaluation split (the baseline then a full-split run). The sixth: the
# prompt protocol to evaluate on, "own" (the default: the one the map was searched on) or "paper" /
# "spaced" (the same task in that rendering, so a user sees whether a map is a property of the model
# or of one prompt; the baseline must then be that protocol's). A finished task's run is kept and
# only compared again. Empty maps are skipped (they compute hf). Ends with the README table
# (searches/task_map_table.py: Holm across the maps).
set -euo pipefail
search=$1 model=$2 baseline=$3 out=$4 subset=${5:-lite} protocol=${6:-own}
case $subset in
  lite) suffix=_lite ;;
  full) suffix= ;;
  *) echo "evaluate_task_maps.sh: the fifth argument is 'lite' (the default) or 'full', not '$subset'" >&2; exit 2 ;;
esac
case $protocol in
  own|paper|spaced) ;;
  *) echo "evaluate_task_maps.sh: the sixth argument is 'own' (the default), 'paper' or 'spaced', not '$protocol'" >&2; exit 2 ;;
esac
pretrained=$(act-eval models path "$model")
mkdir -p "$out"
for map in "$search"/task_maps/*.json; do
  task=${map##*.act_}; task=act_${task%.json}
  case $protocol in
    paper) task=${task%_spaced} ;;
    spaced) task=${task%_spaced}_spaced ;;
  esac
  heads=$(python -c "import sys; from act_eval.core.head_map import load_head_map; print(load_head_map(sys.argv[1]).num_calibrated)" "$map")
  [ "$heads" = 0 ] && { echo "$task: empty map, skipped"; continue; }
  run=$out/$task
  if ! compgen -G "$run/*/results_*.json" > /dev/null; then
    lm_eval run --model hf-act --model_args "pretrained=$pretrained,dtype=float32,head_map=$map" \
      --tasks "${task}${suffix}" --include_path "$(act-eval tasks path)" --batch_size 8 --log_samples \
      --output_path "$run" > "$run.log" 2>&1
  fi
done
python "$(dirname "$0")/task_map_table.py" "$baseline" "$out"
