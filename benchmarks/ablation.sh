#!/bin/bash
# Retrain both GAN stages with one set of techniques on a copy of a finished demo home and evaluate them
# (BENCHMARKS.md, "Training techniques"). Usage:
#   benchmarks/ablation.sh DEMO_HOME NAME [--set ASSET.FIELD=VALUE ...]
# e.g. benchmarks/ablation.sh ~/demo aug --set pretrained_generator.augment=color,translation,cutout \
#        --set finetuned_generator.augment=color,translation,cutout
# The copy is DEMO_HOME-ablation/NAME; one line of results is appended to DEMO_HOME-ablation/results.tsv:
# name, genre accuracy, diversity / real's, coverage / real's, near-copy share, fd_genre_classifier,
# precision / real's, the arguments.
# OMP_NUM_THREADS=1 lets two of these share 2 cores without the threads of one stalling the other's.
set -euo pipefail
BASE=$(realpath "$1"); NAME=$2; shift 2
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT="$BASE-ablation"; HOME_DIR="$OUT/$NAME"
rm -rf "$HOME_DIR"; mkdir -p "$HOME_DIR/checkpoints" "$HOME_DIR/evaluation"
for d in training_data manifests crawls images extracted; do cp -r "$BASE/$d" "$HOME_DIR/"; done
cp -r "$BASE/checkpoints/genre_classifier" "$HOME_DIR/checkpoints/"
cp -r "$BASE/evaluation/feature_cache" "$HOME_DIR/evaluation/" 2>/dev/null || true
ALBUM_PIPELINE_HOME="$HOME_DIR" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$REPO/.venv/bin/album-pipeline" run \
  --profile demo --select pretrained_generator,finetuned_generator,generator_evaluation \
  --set pretrained_generator.steps=150 --set finetuned_generator.steps=550 "$@" > "$HOME_DIR.log" 2>&1
"$REPO/.venv/bin/python" - "$HOME_DIR" "$NAME" "$*" >> "$OUT/results.tsv" <<'PY'
import json, sys
home, name, args = sys.argv[1:]
m = json.load(open(f"{home}/evaluation/metrics.json"))["metrics"]
ratio = lambda key: m[key] / m["heldout/" + key]
print("\t".join([name, f"{m['genre_accuracy']:.3f}", f"{ratio('diversity'):.3f}", f"{ratio('coverage'):.3f}",
                 f"{m['near_copy_share']:.3f}", f"{m['fd_genre_classifier']:.2f}", f"{ratio('precision'):.3f}",
                 args]))
PY
tail -1 "$OUT/results.tsv"
