#!/usr/bin/env bash
# Train and evaluate every replication model concurrently on ONE GPU (the device machine), then pack
# logs and results (no checkpoints) into $OUT/results.tar.gz.  Run from the repository root:
#   bash examples/replication/gpu_run.sh BIN GOLD_DIR OUT [SECONDS_OF_TRAINING]
# BIN: binarised data of prepare.py (test = newstest2014, test1 = RWTH); GOLD_DIR: alignment.talp and
# alignment.en-de.talp (the gold with the languages swapped).  Each model trains for MAX_UPDATE
# updates or SECONDS, whichever comes first (the table reports the updates reached), then:
# the RWTH alignment sweep and its per-layer link files (analysis/links/, for
# examples/rwth_alignment/bidirectional.py), then RWTH and newstest2014 beam-4 translations.
# Environment: MODELS ("DIR:VARIANT" list; DIR de-en or en-de), MAX_UPDATE, MAX_TOKENS, PROBE=1
# (train only, no saving: a throughput probe), LR, EVAL=0 (train only; a later call resumes and
# evaluates), DEADLINE (seconds after the start by which evaluation must have ended: each step gets the
# time left, so the results are packed even when a step runs long), PRECISION: "" = fp32 (TF32
# matmuls), --fp16, --amp, or auto (default): a 60-second --fp16 probe of ReLA-i and ReLA-g decides —
# fp16 when their loss scale stays >= 1 (before the fix of the RMSNorm backward it fell to 0.125
# within 200 updates, see README.md), else fp32.  The probe's logs and the decision are packed too.
# FP16_PROBE=alongside runs the same probe beside the training instead of before it (the precision
# stays PRECISION's, which must then be given): the fp16 check costs no training time.
# STEPS: what each model does, of "train analyze rwth newstest2014" (the default, in that order: the
# evaluation's most informative step first); e.g. STEPS="analyze rwth" evaluates the checkpoints a
# previous call on the same (still warm) machine left in $WORK, training nothing.
set -uo pipefail
T_START=$(date +%s)
BIN=$1; GOLD=$2; OUT=$3; SECONDS_TRAIN=${4:-360}
MODELS=${MODELS:-"de-en:softmax de-en:sparsemax de-en:entmax15 de-en:rela-i de-en:rela-g en-de:softmax en-de:rela-g"}
MAX_UPDATE=${MAX_UPDATE:-100000}; MAX_TOKENS=${MAX_TOKENS:-8192}
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(cd "$HERE/../.." && pwd)"
for step in ${STEPS:-}; do
  case $step in train|analyze|rwth|newstest2014) ;;
    *) echo "gpu_run.sh: error: STEPS: unknown step '$step' (train analyze rwth newstest2014)" >&2; exit 2 ;;
  esac
done
source "$REPO/scripts/gpu/setup.sh" || exit 1
export PYTHONPATH="$REPO:$PYTHONPATH"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # several processes share 16 cores
USER_DIR="$REPO/fairseq_rela"; W=${WORK:-/tmp/replication}; mkdir -p "$W" "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$W/gpu.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' >> "$W/gpu.txt"
hours=$(python3 -c "print($SECONDS_TRAIN / 3600)")
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1  # fp32 runs use TF32 matmuls (fairseq has no option for it)
left() {  # seconds left before DEADLINE (a large number without one)
  local l=999999; [ -n "${DEADLINE:-}" ] && l=$(( DEADLINE - ($(date +%s) - T_START) ))
  [ "$l" -lt 1 ] && l=1; echo "$l"
}

has_step() { case " ${STEPS:-train analyze rwth newstest2014} " in *" $1 "*) return 0 ;; esac; return 1; }

run_model() {  # DIR:VARIANT
  local dir=${1%%:*} v=${1#*:} src tgt act m
  src=${dir%-*}; tgt=${dir#*-}; m="${RUN_ROOT:-$W}/$dir-$v"; mkdir -p "$m"
  case $v in
    rela-g) act="--attention-activation rela --rela-variant g" ;;
    rela-i) act="--attention-activation rela --rela-variant i" ;;
    *) act="--attention-activation $v" ;;
  esac
  local extra=${2:-} hours_m=${3:-$hours}
  local save="--save-dir $m/ckpt --no-epoch-checkpoints --save-interval 1000"  # a rerun resumes from checkpoint_last.pt
  [ "${PROBE:-0}" = 1 ] && save="--no-save"
  local t0
  if has_step train; then
    t0=$(date +%s)
    fairseq-train "$BIN" --user-dir "$USER_DIR" --task translation_rela \
        --source-lang "$src" --target-lang "$tgt" --arch rela_transformer_iwslt_de_en --share-all-embeddings $act \
        --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-8 --lr "${LR:-1e-3}" --lr-scheduler inverse_sqrt \
        --warmup-updates 1000 --dropout 0.1 --attention-dropout 0.1 --weight-decay 0.0001 \
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens "$MAX_TOKENS" \
        --max-update "$MAX_UPDATE" --stop-time-hours "$hours_m" --validate-interval-updates 500 ${PRECISION-} $extra \
        --seed 1 --num-workers 2 --log-format simple --log-interval "${LOG_INTERVAL:-100}" $save >> "$m/train.log" 2>&1  # appended: a resumed run keeps its history
    echo "train_seconds $(( $(date +%s) - t0 ))" > "$m/times.txt"
  fi
  [ "${PROBE:-0}" = 1 ] || [ "${EVAL:-1}" = 0 ] && return
  local ck="$m/ckpt/checkpoint_last.pt" gold="$GOLD/alignment.talp"
  [ "$dir" = en-de ] && gold="$GOLD/alignment.en-de.talp"
  # The most informative first, so a deadline cuts what matters least: the RWTH alignment sweep (AER,
  # sparsity, null rate, head JSD), the RWTH translations (508 sentences), then newstest2014 (3,003).
  has_step analyze && timeout "$(left)" python3 -m fairseq_rela.cli.analyze "$BIN" --user-dir "$USER_DIR" \
      --source-lang "$src" --target-lang "$tgt" --path "$ck" --gen-subset test1 --gold-alignment "$gold" --write-links \
      --output-dir "$m/analysis" --plot-sentences 0,1 --max-tokens 4000 --no-progress-bar > "$m/analyze.log" 2>&1
  has_step rwth && timeout "$(left)" fairseq-generate "$BIN" --user-dir "$USER_DIR" --source-lang "$src" --target-lang "$tgt" \
      --path "$ck" --gen-subset test1 --beam 4 --lenpen 0.6 --max-len-a 1.2 --max-len-b 10 --max-tokens 8000 \
      --required-batch-size-multiple 1 --post-process sentencepiece > "$m/gen-rwth.txt" 2> "$m/gen-rwth.log"
  if has_step newstest2014; then
    t0=$(date +%s)
    timeout "$(left)" fairseq-generate "$BIN" --user-dir "$USER_DIR" --source-lang "$src" --target-lang "$tgt" --path "$ck" \
        --gen-subset test --beam 4 --lenpen 0.6 --max-len-a 1.2 --max-len-b 10 --max-tokens 8000 --required-batch-size-multiple 1 \
        --post-process sentencepiece > "$m/gen-newstest2014.txt" 2> "$m/gen-newstest2014.log"
    echo "decode_newstest2014_seconds $(( $(date +%s) - t0 ))" >> "$m/times.txt"
  fi
  python3 -c "from fairseq_rela.analysis.runner import trained_updates as t; print('updates', t('$ck'))" >> "$m/times.txt"
}

fp16_probe() {  # 60 s of --fp16 training of ReLA-i and ReLA-g (no saving) -> $W/fp16-probe/{verdict.txt,precision}
  local p="$W/fp16-probe" v scale verdict=--fp16; mkdir -p "$p"
  for v in rela-i rela-g; do
    RUN_ROOT="$p" PRECISION=--fp16 PROBE=1 STEPS=train LOG_INTERVAL=50 run_model "de-en:$v" "--max-update 400" 0.0167 &
  done
  wait
  for v in rela-i rela-g; do
    mv "$p/de-en-$v/train.log" "$p/$v.log"; rm -rf "$p/de-en-$v"
    scale=$(grep -o 'loss_scale=[0-9.e+-]*' "$p/$v.log" | tail -1 | cut -d= -f2)
    echo "$v: last loss_scale ${scale:-none}, $(grep -c 'gradient overflow' "$p/$v.log") overflow steps" >> "$p/verdict.txt"
    python3 -c "import sys; sys.exit(0 if '${scale}' and float('${scale}') >= 1 else 1)" || verdict=""
    grep -q "Minimum loss scale" "$p/$v.log" && verdict=""
  done
  echo "$verdict" > "$p/precision"; echo "fp16 verdict: ${verdict:-fp32 (TF32 matmuls)}" | tee -a "$p/verdict.txt"
}

if ! has_step train; then
  :  # nothing trains: no precision to decide
elif [ "${FP16_PROBE:-}" = alongside ]; then
  [ "${PRECISION-auto}" = auto ] && { echo "gpu_run.sh: FP16_PROBE=alongside needs PRECISION (\"\" for fp32, --fp16, --amp)" >&2; exit 2; }
  fp16_probe &
elif [ "${PRECISION-auto}" = auto ] && [ -f "$W/precision" ]; then  # a resumed run keeps the precision it trained in
  PRECISION=$(cat "$W/precision")
elif [ "${PRECISION-auto}" = auto ]; then  # fp16 probe first (see the header)
  fp16_probe; PRECISION=$(cat "$W/fp16-probe/precision")
fi
if has_step train; then
  echo "$PRECISION" > "$W/precision"  # what the models train in (the probe's verdict is only fp16-probe/'s)
  echo "precision ${PRECISION:-fp32}" >> "$W/gpu.txt"
fi
for model in $MODELS; do run_model "$model" & done
wait
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$W/gpu.txt"
tar czf "$OUT/results.tar.gz" -C "$W" --exclude='ckpt' --exclude='*.pt' .
ls -la "$OUT"; du -sh "$W"/*/ 2>/dev/null | head -20
for m in "$W"/*-*/; do echo "== $m"; grep -E "valid on|overflow|Error|error" "$m/train.log" | tail -3; tail -2 "$m/analyze.log" 2>/dev/null; done
