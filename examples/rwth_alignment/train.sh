#!/usr/bin/env bash
# Train the De->En models of the RWTH alignment experiment (one per attention), each for the same
# number of updates. A rerun with more updates resumes from checkpoint_last.pt; each run leaves a
# snapshot ckpt-VARIANT/checkpoint_UPDATES.pt so that evaluate.sh can score VARIANT@UPDATES later.
#   bash examples/rwth_alignment/train.sh WORK UPDATES [VARIANTS...]
# VARIANTS: softmax rela-g rela-i sparsemax entmax15 (default: softmax rela-g rela-i)
set -euo pipefail
W=${1:-work/rwth}; UPDATES=${2:-1200}; shift 2 || true
VARIANTS=${*:-softmax rela-g rela-i}
USER_DIR="$(cd "$(dirname "$0")/../.." && pwd)/fairseq_rela"
for v in $VARIANTS; do
  case $v in
    rela-g) act="--attention-activation rela --rela-variant g" ;;
    rela-i) act="--attention-activation rela --rela-variant i" ;;
    *) act="--attention-activation $v" ;;
  esac
  echo "== $v: training to $UPDATES updates"
  fairseq-train "$W/bin" --user-dir "$USER_DIR" --task translation_rela --log-attention-stats \
      --arch rela_transformer --encoder-layers 3 --decoder-layers 3 \
      --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 \
      --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings $act \
      --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr 1e-3 --lr-scheduler inverse_sqrt \
      --warmup-updates 800 --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
      --max-tokens 4096 --max-update "$UPDATES" --seed 1 --cpu --no-epoch-checkpoints \
      --save-dir "$W/ckpt-$v" --log-interval 100 --no-progress-bar --tensorboard-logdir "$W/tb-$v" \
      >> "$W/train-$v.log" 2>&1
  cp "$W/ckpt-$v/checkpoint_last.pt" "$W/ckpt-$v/checkpoint_$UPDATES.pt"
  grep "valid on" "$W/train-$v.log" | tail -1
done
