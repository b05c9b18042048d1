#!/usr/bin/env bash
# Issue 24's two-model run: softmax and ReLA-g De->En trained side by side on the one GPU, then evaluated
# and summarised in the same call, by gpu_run.sh with the pair's plan.  Run from the repository root:
#   bash examples/replication/gpu_pair.sh BIN GOLD_DIR OUT [SECONDS_OF_TRAINING]
# BIN, GOLD_DIR, OUT as gpu_run.sh's (GOLD_DIR should also hold prepare.py's newstest2014.raw.* and
# rwth.tok.*, for the summary's BLEU).  Deadline-driven: DEADLINE (570) seconds after the start the
# results are packed; training gets SECONDS_OF_TRAINING, by default DEADLINE - EVAL_RESERVE (170: the
# alignment sweep, the RWTH and newstest2014 translations and the summary of two models) - 25 (start-up,
# the last validation and saving).
# The plan (each overridable from the environment): MODELS "de-en:softmax de-en:rela-g", PRECISION
# --fp16 ("" for fp32 with TF32 matmuls, --amp), MAX_TOKENS 32768 x UPDATE_FREQ 1 tokens an update,
# LR 7e-4, WARMUP 500 updates, VALID_INTERVAL 500, NEWSTEST_SHARDS 3 (a fixed third of newstest2014).
# CPU=1: the same script path on the CPU for the test suite: fp32, ARCH rela_transformer_tiny and
# MAX_TOKENS 1000 unless given; set MAX_UPDATE to a few updates.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "gpu_pair.sh: error: usage: gpu_pair.sh BIN GOLD_DIR OUT [SECONDS_OF_TRAINING]" >&2; exit 2
fi
BIN=$1; GOLD=$2
[ -f "$BIN/dict.de.txt" ] && [ -f "$BIN/dict.en.txt" ] \
  || { echo "gpu_pair.sh: error: $BIN: no dict.de.txt and dict.en.txt (prepare.py's bin/ is needed)" >&2; exit 2; }
[ -f "$GOLD/alignment.talp" ] || { echo "gpu_pair.sh: error: $GOLD: no alignment.talp (the RWTH gold)" >&2; exit 2; }
export CPU=${CPU:-0}
export DEADLINE=${DEADLINE:-570} EVAL_RESERVE=${EVAL_RESERVE:-170}
for var in DEADLINE EVAL_RESERVE; do
  case ${!var} in ''|*[!0-9]*) echo "gpu_pair.sh: error: $var=${!var}: seconds are needed" >&2; exit 2 ;; esac
done
export MODELS=${MODELS:-"de-en:softmax de-en:rela-g"}
export UPDATE_FREQ=${UPDATE_FREQ:-1} LR=${LR:-7e-4} WARMUP=${WARMUP:-500} VALID_INTERVAL=${VALID_INTERVAL:-500}
export NEWSTEST_SHARDS=${NEWSTEST_SHARDS:-3}
if [ "$CPU" = 1 ]; then
  export PRECISION=${PRECISION-} ARCH=${ARCH:-rela_transformer_tiny} MAX_TOKENS=${MAX_TOKENS:-1000}
else
  export PRECISION=${PRECISION---fp16} MAX_TOKENS=${MAX_TOKENS:-32768}
fi
TRAIN_SECONDS=${4:-$(( DEADLINE - EVAL_RESERVE - 25 ))}
case $TRAIN_SECONDS in ''|*[!0-9]*|0) echo "gpu_pair.sh: error: training time $TRAIN_SECONDS s: give DEADLINE > EVAL_RESERVE + 25 or SECONDS_OF_TRAINING" >&2; exit 2 ;; esac
echo "gpu_pair.sh: $MODELS, ${PRECISION:-fp32}, $MAX_TOKENS x $UPDATE_FREQ tokens an update, lr $LR, warm-up $WARMUP," \
     "$TRAIN_SECONDS s of training, results by $DEADLINE s"
exec bash "$HERE/gpu_run.sh" "$BIN" "$GOLD" "$3" "$TRAIN_SECONDS"
