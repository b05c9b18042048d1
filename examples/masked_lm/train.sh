#!/usr/bin/env bash
# Train a small RoBERTa (4 layers, 256/1024, 4 heads) with the stock fairseq-train --task masked_lm
# on the English Europarl text of prepare.py, one sentence per sample (<s> sentence </s>), as the
# sentences the analysis feeds.  Resumable: rerun to continue from WORK/ckpt/checkpoint_last.pt.
#
#   bash examples/masked_lm/train.sh [WORK]          # WORK defaults to work/masked_lm
#
# Threads: OMP_NUM_THREADS (default 2).  UPDATES (default 600) sets the length of the schedule.
set -euo pipefail
WORK=${1:-work/masked_lm}
UPDATES=${UPDATES:-600}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
BIN=$(dirname "$(command -v python)")
# CPU allocator: tcmalloc where installed (fairseq_rela.cli.malloc; MALLOC=glibc keeps glibc's malloc)
MALLOC_ENV=$(cd "$(dirname "$0")/../.." && python3 -m fairseq_rela.cli.malloc --shell); eval "$MALLOC_ENV"
[ -x "$BIN/fairseq-train" ] || BIN=.venv/bin
"$BIN/fairseq-train" "$WORK/bin" --task masked_lm --criterion masked_lm --arch roberta_base \
    --encoder-layers 4 --encoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --encoder-attention-heads 4 \
    --sample-break-mode eos --tokens-per-sample 256 --max-positions 256 --max-tokens 2048 \
    --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-6 --clip-norm 1.0 --weight-decay 0.01 \
    --lr 7e-4 --lr-scheduler polynomial_decay --warmup-updates 60 --total-num-update "$UPDATES" \
    --max-update "$UPDATES" --data-buffer-size 0 --dropout 0.1 --attention-dropout 0.1 \
    --save-dir "$WORK/ckpt" --no-epoch-checkpoints --save-interval-updates 100 --keep-interval-updates 1 \
    --max-valid-steps 20 --skip-invalid-size-inputs-valid-test --seed 1 --num-workers 0 --cpu \
    --log-format simple --log-interval 25
