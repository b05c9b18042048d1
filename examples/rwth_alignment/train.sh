#!/usr/bin/env bash
# Train the De->En models of the RWTH alignment experiment (one per attention), each for the same
# number of updates. A rerun with more updates resumes from checkpoint_last.pt; each run leaves a
# snapshot ckpt-VARIANT/checkpoint_UPDATES.pt so that evaluate.sh can score VARIANT@UPDATES later.
#   bash examples/rwth_alignment/train.sh WORK UPDATES [VARIANTS...]
# VARIANTS: softmax rela-g rela-i sparsemax entmax15 (default: softmax rela-g rela-i)
# DIRECTION=en-de trains the reverse models (for the bidirectional alignment) on the same binarised
# folder (one joined dictionary); they are named VARIANT-en-de (ckpt-VARIANT-en-de/, train-VARIANT-en-de.log).
# THREADS (default: torch's) sets the CPU threads of each run: THREADS=1 for two runs side by side.
# MALLOC (default tcmalloc where installed): the CPU allocator (examples/benchmark/train/README.md).
set -euo pipefail
W=${1:-work/rwth}; UPDATES=${2:-1200}; shift 2 || true
VARIANTS=${*:-softmax rela-g rela-i}
DIRECTION=${DIRECTION:-de-en}
[ -n "${THREADS:-}" ] && export OMP_NUM_THREADS=$THREADS
case $DIRECTION in
  de-en) langs=(--source-lang de --target-lang en); suffix= ;;
  en-de) langs=(--source-lang en --target-lang de); suffix=-en-de ;;
  *) echo "train.sh: error: DIRECTION=$DIRECTION: expected de-en or en-de" >&2; exit 2 ;;
esac
USER_DIR="$(cd "$(dirname "$0")/../.." && pwd)/fairseq_rela"
# CPU allocator: tcmalloc where installed (fairseq_rela.cli.malloc; MALLOC=glibc keeps glibc's malloc)
MALLOC_ENV=$(cd "$USER_DIR/.." && python3 -m fairseq_rela.cli.malloc --shell); eval "$MALLOC_ENV"
for v in $VARIANTS; do  # every name checked before the first one trains
  case $v in softmax|rela-g|rela-i|sparsemax|entmax15) ;;
    *) echo "train.sh: error: unknown variant '$v' (softmax rela-g rela-i sparsemax entmax15)" >&2; exit 2 ;;
  esac
done
for v in $VARIANTS; do
  case $v in
    rela-g) act="--attention-activation rela --rela-variant g" ;;
    rela-i) act="--attention-activation rela --rela-variant i" ;;
    *) act="--attention-activation $v" ;;
  esac
  m=$v$suffix
  echo "== $m: training to $UPDATES updates"
  fairseq-train "$W/bin" --user-dir "$USER_DIR" --task translation_rela --log-attention-stats "${langs[@]}" \
      --arch rela_transformer --encoder-layers 3 --decoder-layers 3 \
      --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 \
      --encoder-attention-heads 4 --decoder-attention-heads 4 --share-all-embeddings $act \
      --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr 1e-3 --lr-scheduler inverse_sqrt \
      --warmup-updates 800 --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
      --max-tokens 4096 --max-update "$UPDATES" --data-buffer-size 0 --seed 1 --cpu --no-epoch-checkpoints \
      --save-dir "$W/ckpt-$m" --log-interval 100 --no-progress-bar --tensorboard-logdir "$W/tb-$m" \
      >> "$W/train-$m.log" 2>&1
  cp "$W/ckpt-$m/checkpoint_last.pt" "$W/ckpt-$m/checkpoint_$UPDATES.pt"
  grep "valid on" "$W/train-$m.log" | tail -1
done
