#!/usr/bin/env bash
# CPU-scale replication (no GPU lent): Multi30k De->En, one model per attention, identical but for
# --attention-activation; each trains MAX_EPOCH epochs (or until validation loss has not improved for
# PATIENCE epochs), then is evaluated from checkpoint_best.pt: beam-4 translation of test_2016_flickr
# (decode time recorded) and fairseq-rela-analyze (sparsity, null rate, head JSD, special-token shares).
#   bash examples/replication/multi30k.sh BIN WORK [VARIANTS...]
# BIN: prepare_multi30k.py's bin folder; VARIANTS: softmax sparsemax entmax15 rela-i rela-g
# (default all five, one after the other).  Run two lists side by side with THREADS=1 on 2 cores.
# A rerun resumes each model from checkpoint_last.pt and skips finished evaluations.
# SEED (default 1) is fairseq's --seed: initialisation, dropout and batch order.
# TRAIN_ARGS (default none): fairseq-train options appended to the recipe's, whitespace-separated, no quoting;
# a repeated option overrides the recipe's (e.g. TRAIN_ARGS="--lr 0.0014 --warmup-updates 4000").
# MALLOC (default tcmalloc where installed, else glibc): the CPU allocator (fairseq_rela.cli.malloc), recorded
# in times.txt as 'malloc NAME'; it changes the speed, not the logged losses.
set -euo pipefail
BIN=$1; W=$2; shift 2
VARIANTS=${*:-softmax rela-g rela-i sparsemax entmax15}
MAX_EPOCH=${MAX_EPOCH:-10}; PATIENCE=${PATIENCE:-3}; SEED=${SEED:-1}; export OMP_NUM_THREADS=${THREADS:-2}
REPO="$(cd "$(dirname "$0")/../.." && pwd)"; USER_DIR="$REPO/fairseq_rela"
PY=${PYTHON:-python3}; [ -x "$REPO/.venv/bin/python" ] && PY="$REPO/.venv/bin/python"
BINDIR="$(dirname "$PY")"
# CPU allocator: tcmalloc where installed (fairseq_rela.cli.malloc; examples/benchmark/train/README.md)
MALLOC_ENV=$(cd "$REPO" && "$PY" -m fairseq_rela.cli.malloc --shell); eval "$MALLOC_ENV"
for v in $VARIANTS; do
  case $v in
    rela-g) act="--attention-activation rela --rela-variant g" ;;
    rela-i) act="--attention-activation rela --rela-variant i" ;;
    softmax|sparsemax|entmax15) act="--attention-activation $v" ;;
    *) echo "multi30k.sh: error: unknown variant '$v' (softmax sparsemax entmax15 rela-i rela-g)" >&2; exit 2 ;;
  esac
  m="$W/de-en-$v"; mkdir -p "$m"
  if [ ! -f "$m/trained" ]; then
    t0=$(date +%s); echo "malloc $FAIRSEQ_RELA_MALLOC" >> "$m/times.txt"
    "$BINDIR/fairseq-train" "$BIN" --user-dir "$USER_DIR" --task translation_rela $act \
        --arch rela_transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 128 --decoder-embed-dim 128 \
        --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 \
        --share-all-embeddings --optimizer adam --adam-betas '(0.9,0.98)' --lr 1e-3 --lr-scheduler inverse_sqrt \
        --warmup-updates 400 --dropout 0.2 --attention-dropout 0.1 --weight-decay 0.0001 \
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 4096 \
        --max-epoch "$MAX_EPOCH" --patience "$PATIENCE" --seed "$SEED" --cpu --no-epoch-checkpoints \
        --save-dir "$m/ckpt" --log-format simple --log-interval 50 --no-progress-bar ${TRAIN_ARGS:-} >> "$m/train.log" 2>&1
    echo "train_seconds $(( $(date +%s) - t0 ))" >> "$m/times.txt"; touch "$m/trained"
  fi
  ck="$m/ckpt/checkpoint_best.pt"
  if [ ! -s "$m/gen-test.txt" ]; then
    t0=$(date +%s)
    "$BINDIR/fairseq-generate" "$BIN" --user-dir "$USER_DIR" --path "$ck" --gen-subset test --beam 4 --lenpen 0.6 \
        --batch-size 64 --required-batch-size-multiple 1 --post-process sentencepiece --cpu \
        > "$m/gen-test.txt.part" 2> "$m/gen-test.log"
    mv "$m/gen-test.txt.part" "$m/gen-test.txt"
    echo "decode_test_seconds $(( $(date +%s) - t0 ))" >> "$m/times.txt"
  fi
  if [ ! -f "$m/analysis/stats.json" ]; then
    "$BINDIR/fairseq-rela-analyze" "$BIN" --user-dir "$USER_DIR" --path "$ck" --gen-subset test --cpu \
        --output-dir "$m/analysis" --plot-sentences 0 --max-tokens 4000 --no-progress-bar > "$m/analyze.log" 2>&1
  fi
  "$PY" -c "from fairseq_rela.analysis.runner import trained_updates as t; print('best_updates', t('$ck'))" >> "$m/times.txt"
  grep "valid on" "$m/train.log" | tail -1
done
