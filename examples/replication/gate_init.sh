#!/usr/bin/env bash
# ReLA-g early training with the gate initialised as the authors (uniform) and as before (ones): same
# data (prepare.py's corpus), model, seed and batches; validation perplexity on newstest2013 every
# 100 updates (first 15 batches).  Logs in work/gateinit/.   bash examples/replication/gate_init.sh [PREPARED]
set -euo pipefail; cd "$(dirname "$0")/../.."; W=${1:-work/replication}; mkdir -p work/gateinit
for init in uniform ones; do
  fairseq-train "$W/bin" --user-dir fairseq_rela --task translation_rela --arch rela_transformer \
    --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 128 --decoder-embed-dim 128 \
    --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 \
    --share-all-embeddings --attention-activation rela --rela-variant g --rela-gate-init $init \
    --optimizer adam --adam-betas '(0.9,0.98)' --lr 1e-3 --lr-scheduler inverse_sqrt --warmup-updates 400 \
    --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 2048 \
    --max-update 300 --validate-interval-updates 100 --max-valid-steps 15 --seed 1 --cpu --no-save --log-format simple --log-interval 50 \
    --num-workers 0 --data-buffer-size 0 > work/gateinit/train-$init.log 2>&1
done
