#!/usr/bin/env bash
# Train and evaluate every replication model concurrently on ONE GPU (the device machine), then pack
# logs and results (no checkpoints) into $OUT/results.tar.gz.  Run from the repository root:
#   bash examples/replication/gpu_run.sh BIN GOLD_DIR OUT [SECONDS_OF_TRAINING]
# BIN: binarised data of prepare.py (test = newstest2014, test1 = RWTH); GOLD_DIR: alignment.talp and
# alignment.en-de.talp (the gold with the languages swapped).  Each model trains for MAX_UPDATE
# updates or SECONDS, whichever comes first (the table reports the updates reached), then:
# newstest2014 and RWTH beam-4 translations, the RWTH alignment sweep, per-layer link files.
# Environment: MODELS ("DIR:VARIANT" list; DIR de-en or en-de), MAX_UPDATE, MAX_TOKENS, PROBE=1
# (train only, no saving: a throughput probe), PRECISION (default "" = fp32: with --fp16 and --amp the
# loss scale of ReLA collapsed on an H100, see README.md; pass --fp16 once that is fixed), LR.
set -uo pipefail
BIN=$1; GOLD=$2; OUT=$3; SECONDS_TRAIN=${4:-360}
MODELS=${MODELS:-"de-en:softmax de-en:sparsemax de-en:entmax15 de-en:rela-i de-en:rela-g en-de:softmax en-de:rela-g"}
MAX_UPDATE=${MAX_UPDATE:-100000}; MAX_TOKENS=${MAX_TOKENS:-8192}
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(cd "$HERE/../.." && pwd)"
source "$REPO/scripts/gpu/setup.sh" || exit 1
export PYTHONPATH="$REPO:$PYTHONPATH"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # several processes share 16 cores
USER_DIR="$REPO/fairseq_rela"; W=${WORK:-/tmp/replication}; mkdir -p "$W" "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$W/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' >> "$W/gpu.txt"
hours=$(python3 -c "print($SECONDS_TRAIN / 3600)")

run_model() {  # DIR:VARIANT
  local dir=${1%%:*} v=${1#*:} src tgt act m
  src=${dir%-*}; tgt=${dir#*-}; m="$W/$dir-$v"; mkdir -p "$m"
  case $v in
    rela-g) act="--attention-activation rela --rela-variant g" ;;
    rela-i) act="--attention-activation rela --rela-variant i" ;;
    *) act="--attention-activation $v" ;;
  esac
  local save="--save-dir $m/ckpt --no-epoch-checkpoints --save-interval 1000"  # a rerun resumes from checkpoint_last.pt
  [ "${PROBE:-0}" = 1 ] && save="--no-save"
  local t0=$(date +%s)
  fairseq-train "$BIN" --user-dir "$USER_DIR" --task translation_rela \
      --source-lang "$src" --target-lang "$tgt" --arch rela_transformer_iwslt_de_en --share-all-embeddings $act \
      --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-8 --lr "${LR:-1e-3}" --lr-scheduler inverse_sqrt \
      --warmup-updates 1000 --dropout 0.1 --attention-dropout 0.1 --weight-decay 0.0001 \
      --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens "$MAX_TOKENS" \
      --max-update "$MAX_UPDATE" --stop-time-hours "$hours" --validate-interval-updates 500 ${PRECISION-} \
      --seed 1 --num-workers 2 --log-format simple --log-interval "${LOG_INTERVAL:-100}" $save > "$m/train.log" 2>&1
  echo "train_seconds $(( $(date +%s) - t0 ))" > "$m/times.txt"
  [ "${PROBE:-0}" = 1 ] && return
  local ck="$m/ckpt/checkpoint_last.pt" gold="$GOLD/alignment.talp"
  [ "$dir" = en-de ] && gold="$GOLD/alignment.en-de.talp"
  t0=$(date +%s)
  fairseq-generate "$BIN" --user-dir "$USER_DIR" --source-lang "$src" --target-lang "$tgt" --path "$ck" \
      --gen-subset test --beam 4 --lenpen 0.6 --max-len-a 1.2 --max-len-b 10 --max-tokens 8000 --required-batch-size-multiple 1 \
      --post-process sentencepiece > "$m/gen-newstest2014.txt" 2> "$m/gen-newstest2014.log"
  echo "decode_newstest2014_seconds $(( $(date +%s) - t0 ))" >> "$m/times.txt"
  fairseq-generate "$BIN" --user-dir "$USER_DIR" --source-lang "$src" --target-lang "$tgt" --path "$ck" \
      --gen-subset test1 --beam 4 --lenpen 0.6 --max-len-a 1.2 --max-len-b 10 --max-tokens 8000 --required-batch-size-multiple 1 \
      --post-process sentencepiece > "$m/gen-rwth.txt" 2> "$m/gen-rwth.log"
  python3 -m fairseq_rela.cli.analyze "$BIN" --user-dir "$USER_DIR" --source-lang "$src" --target-lang "$tgt" \
      --path "$ck" --gen-subset test1 --gold-alignment "$gold" --output-dir "$m/analysis" --plot-sentences 0,1 \
      --max-tokens 4000 --no-progress-bar > "$m/analyze.log" 2>&1
  python3 "$HERE/dump_links.py" "$BIN" --source-lang "$src" --target-lang "$tgt" --path "$ck" \
      --gen-subset test1 --out "$m/links" > "$m/dump_links.log" 2>&1
  python3 -c "from fairseq_rela.analysis.runner import trained_updates as t; print('updates', t('$ck'))" >> "$m/times.txt"
}

for model in $MODELS; do run_model "$model" & done
wait
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$W/gpu.txt"
tar czf "$OUT/results.tar.gz" -C "$W" --exclude='ckpt' --exclude='*.pt' .
ls -la "$OUT"; du -sh "$W"/*/ 2>/dev/null | head -20
for m in "$W"/*-*/; do echo "== $m"; grep -E "valid on|overflow|Error|error" "$m/train.log" | tail -3; tail -2 "$m/analyze.log" 2>/dev/null; done
