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
# Batch plan: MAX_TOKENS (8192) x UPDATE_FREQ (1) tokens an update, WARMUP (1000) warm-up updates,
# VALID_INTERVAL (500) updates between validations.  NEWSTEST_SHARDS=N translates a fixed 1/N of
# newstest2014 (fairseq-generate --distributed-world-size N --distributed-rank 0, no process group: every
# N-th batch of the length-sorted ones, the same sentences for every model; the summary
# names how many sentences; GEN_MAX_TOKENS, 8000, is the translations' batch size).  SUMMARY=1 (default)
# ends with summarize.py on the run (--data GOLD_DIR when it holds prepare.py's newstest2014.raw.* and
# rwth.tok.*), results.md, results.json and curves.png copied beside results.tar.gz; where sacremoses
# and matplotlib are missing (the GPU site) the table has no BLEU and no curves (summary.log says so:
# rerun summarize.py on the unpacked results here).  CPU=1: the same steps on the CPU for a test (no GPU setup, no
# nvidia-smi, --cpu everywhere, fp32 only; ARCH picks a small architecture, default the replication's
# rela_transformer_iwslt_de_en).
set -uo pipefail
T_START=$(date +%s)
BIN=$1; GOLD=$2; OUT=$3; SECONDS_TRAIN=${4:-360}
MODELS=${MODELS:-"de-en:softmax de-en:sparsemax de-en:entmax15 de-en:rela-i de-en:rela-g en-de:softmax en-de:rela-g"}
MAX_UPDATE=${MAX_UPDATE:-100000}; MAX_TOKENS=${MAX_TOKENS:-8192}; UPDATE_FREQ=${UPDATE_FREQ:-1}
WARMUP=${WARMUP:-1000}; VALID_INTERVAL=${VALID_INTERVAL:-500}; ARCH=${ARCH:-rela_transformer_iwslt_de_en}
CPU=${CPU:-0}; NEWSTEST_SHARDS=${NEWSTEST_SHARDS:-1}; GEN_MAX_TOKENS=${GEN_MAX_TOKENS:-8000}
HERE="$(cd "$(dirname "$0")" && pwd)"; REPO="$(cd "$HERE/../.." && pwd)"
for step in ${STEPS:-}; do
  case $step in train|analyze|rwth|newstest2014) ;;
    *) echo "gpu_run.sh: error: STEPS: unknown step '$step' (train analyze rwth newstest2014)" >&2; exit 2 ;;
  esac
done
for var in MAX_UPDATE MAX_TOKENS UPDATE_FREQ WARMUP VALID_INTERVAL NEWSTEST_SHARDS GEN_MAX_TOKENS; do
  case ${!var} in ''|*[!0-9]*|0) echo "gpu_run.sh: error: $var=${!var}: a positive integer is needed" >&2; exit 2 ;; esac
done
case $CPU in 0|1) ;; *) echo "gpu_run.sh: error: CPU=$CPU: 0 or 1" >&2; exit 2 ;; esac
DEVICE_FLAG=""
if [ "$CPU" = 1 ]; then
  case ${PRECISION-auto} in ''|auto) PRECISION= ;;
    *) echo "gpu_run.sh: error: CPU=1 trains in fp32 only (PRECISION=$PRECISION)" >&2; exit 2 ;;
  esac
  [ "${FP16_PROBE:-}" = alongside ] && { echo "gpu_run.sh: error: CPU=1: no fp16 probe on the CPU" >&2; exit 2; }
  DEVICE_FLAG=--cpu
else
  source "$REPO/scripts/gpu/setup.sh" || exit 1
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # several processes share 16 cores
USER_DIR="$REPO/fairseq_rela"; W=${WORK:-/tmp/replication}; mkdir -p "$W" "$OUT"
if [ "$CPU" = 1 ]; then
  echo "CPU mode: $(nproc) cores, no GPU" >> "$W/gpu.txt"
else
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$W/gpu.txt"
fi
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' >> "$W/gpu.txt"
hours=$(python3 -c "print($SECONDS_TRAIN / 3600)")
export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1  # fp32 runs use TF32 matmuls (fairseq has no option for it)
left() {  # seconds left before DEADLINE (a large number without one)
  local l=999999; [ -n "${DEADLINE:-}" ] && l=$(( DEADLINE - ($(date +%s) - T_START) ))
  [ "$l" -lt 1 ] && l=1; echo "$l"
}

descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
stop_all() {  # a signal reaches every training, evaluation and probe process, then exit 128+signal
  local pids j; pids=$(for j in $(jobs -p); do echo "$j"; descendants "$j"; done)
  [ -n "$pids" ] && kill $pids 2>/dev/null; wait; exit "$1"
}
trap 'stop_all 143' TERM; trap 'stop_all 130' INT

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
        --source-lang "$src" --target-lang "$tgt" --arch "$ARCH" --share-all-embeddings $act $DEVICE_FLAG \
        --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-8 --lr "${LR:-1e-3}" --lr-scheduler inverse_sqrt \
        --warmup-updates "$WARMUP" --dropout 0.1 --attention-dropout 0.1 --weight-decay 0.0001 \
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" \
        --max-update "$MAX_UPDATE" --stop-time-hours "$hours_m" --validate-interval-updates "$VALID_INTERVAL" ${PRECISION-} $extra \
        --seed 1 --num-workers "${NUM_WORKERS:-2}" --data-buffer-size 0 --log-format simple --log-interval "${LOG_INTERVAL:-100}" $save >> "$m/train.log" 2>&1  # appended: a resumed run keeps its history
    local status=$?
    [ "$status" -ne 0 ] && echo "train_exit_status $status" >> "$m/train.log"
    echo "train_seconds $(( $(date +%s) - t0 ))" > "$m/times.txt"
  fi
  [ "${PROBE:-0}" = 1 ] || [ "${EVAL:-1}" = 0 ] && return
  local ck="$m/ckpt/checkpoint_last.pt" gold="$GOLD/alignment.talp"
  [ "$dir" = en-de ] && gold="$GOLD/alignment.en-de.talp"
  # The most informative first, so a deadline cuts what matters least: the RWTH alignment sweep (AER,
  # sparsity, null rate, head JSD), the RWTH translations (508 sentences), then newstest2014 (3,003).
  has_step analyze && timeout "$(left)" python3 -m fairseq_rela.cli.analyze "$BIN" --user-dir "$USER_DIR" $DEVICE_FLAG \
      --source-lang "$src" --target-lang "$tgt" --path "$ck" --gen-subset test1 --gold-alignment "$gold" --write-links \
      --output-dir "$m/analysis" --plot-sentences 0,1 --max-tokens 4000 --no-progress-bar > "$m/analyze.log" 2>&1
  has_step rwth && timeout "$(left)" fairseq-generate "$BIN" --user-dir "$USER_DIR" $DEVICE_FLAG --source-lang "$src" --target-lang "$tgt" \
      --path "$ck" --gen-subset test1 --beam 4 --lenpen 0.6 --max-len-a 1.2 --max-len-b 10 --max-tokens "$GEN_MAX_TOKENS" \
      --required-batch-size-multiple 1 --post-process sentencepiece > "$m/gen-rwth.txt" 2> "$m/gen-rwth.log"
  if has_step newstest2014; then
    local shard=""  # fairseq-generate shards its batches by the distributed world size (it ignores --num-shards)
    [ "$NEWSTEST_SHARDS" -gt 1 ] && shard="--distributed-world-size $NEWSTEST_SHARDS --distributed-rank 0"
    t0=$(date +%s)
    timeout "$(left)" fairseq-generate "$BIN" --user-dir "$USER_DIR" $DEVICE_FLAG --source-lang "$src" --target-lang "$tgt" --path "$ck" \
        --gen-subset test --beam 4 --lenpen 0.6 --max-len-a 1.2 --max-len-b 10 --max-tokens "$GEN_MAX_TOKENS" --required-batch-size-multiple 1 \
        $shard \
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
[ "$CPU" = 1 ] || nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$W/gpu.txt"
if [ "${SUMMARY:-1}" = 1 ] && [ "${PROBE:-0}" != 1 ]; then  # the tables, from the folders just written
  rm -f "$W/results.md" "$W/results.json" "$W/curves.png"  # never a previous run's table
  opts=(); [ -f "$GOLD/newstest2014.raw.en" ] && [ -f "$GOLD/rwth.tok.en" ] && opts=(--data "$GOLD")
  if ! python3 -c 'import sacremoses, matplotlib' 2>/dev/null; then  # the GPU site has neither
    opts=(--no-plot); echo "no sacremoses/matplotlib here: no BLEU, no curves.png (run summarize.py on the results)" > "$W/summary.log"
  fi
  if timeout "$(left)" python3 "$HERE/summarize.py" "$W" "${opts[@]}" >> "$W/summary.log" 2>&1; then
    for f in results.md results.json curves.png; do [ -f "$W/$f" ] && cp "$W/$f" "$OUT/"; done
  else
    echo "gpu_run.sh: summarize.py failed (status $?): run it on the unpacked results" | tee -a "$W/summary.log" >&2
  fi
fi
tar czf "$OUT/results.tar.gz" -C "$W" --exclude='ckpt' --exclude='*.pt' .
ls -la "$OUT"; du -sh "$W"/*/ 2>/dev/null | head -20
for m in "$W"/*-*/; do echo "== $m"; grep -E "valid on|overflow|Error|error" "$m/train.log" | tail -3; tail -2 "$m/analyze.log" 2>/dev/null; done
failed=$(grep -l '^train_exit_status' "$W"/*/train.log 2>/dev/null)
[ -z "$failed" ] || { echo "gpu_run.sh: error: training failed: $(echo $failed)" >&2; exit 1; }
