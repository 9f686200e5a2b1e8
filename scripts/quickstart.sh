#!/usr/bin/env bash
# The README's main job: set up .venv, train the LIDC bundle on the embedded demo data (stage 1 then stage 2),
# evaluate it on the demo test split, run clinical-style inference on the demo CT volumes, and print where the
# sample sets and pictures are. Everything is written under runs/lidc_car (OUTPUT_DIR to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
out="${OUTPUT_DIR:-runs/lidc_car}"
bundle=bundles/lidc_car/configs
if [ -e "$out" ]; then
    kept="$out.previous-$(date +%Y%m%d-%H%M%S)"
    mv "$out" "$kept"
    echo "note: the earlier run in $out was moved to $kept" >&2
fi
start=$(date +%s)
echo "== 1/3 training (stage 1: F, stage 2: G and D) on the demo data set"
python -m monai.bundle run training --config_file "$bundle/train.json" --output_dir "$out"
echo "== 2/3 evaluation on the demo test split (GED with 16 and 100 samples, HM-IoU, ECE)"
python -m monai.bundle run evaluating --config_file "['$bundle/train.json','$bundle/evaluate.json']" \
    --output_dir "$out"
echo "== 3/3 inference on the demo CT volumes (lesions from their CSV of world coordinates)"
python -m monai.bundle run inferring --config_file "$bundle/inference.json" --output_dir "$out"
echo
echo "== test split: sample sets and the fidelity of G's samples"
monai-car-summary "$out/eval/metrics.json"
echo
echo "done in $(($(date +%s) - start)) s. Outputs under $out:"
echo "  model (F + G, best validation GED)   $out/models/model.pt"
echo "  TensorBoard logs                     tensorboard --logdir $out/logs"
echo "  evaluation report and metrics        $out/eval/report.md  $out/eval/metrics.json"
echo "  pictures of the evaluation           $out/eval/reliability*.png  $out/eval/montage_*.png"
echo "  per-lesion sample sets (NIfTI)       $out/inference/<study>/<lesion>/ (samples, mean, F, uncertainty maps)"
echo "  per-lesion montages (PNG)            $out/inference/<study>/<lesion>/*.png"
echo "  whole-CT mean maps (open on the CT)  $out/inference/<study>/mean_foreground_full.nii.gz"
echo "  per-study summaries                  $(find "$out/inference" -name summary.csv | sort | tr '\n' ' ')"
