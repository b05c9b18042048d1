#!/usr/bin/env bash
# Install, then train a tiny ReLA-g model on a synthetic corpus made here, decode it with beam
# search, score BLEU, and analyse its attention.  About two minutes on 2 CPU cores.
#   bash scripts/demo.sh [WORKDIR]      (default: ./demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV=${FAIRSEQ_RELA_VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH" PYTHONWARNINGS=ignore
W=${1:-demo}
mkdir -p "$W"
USER_DIR="$PWD/fairseq_rela"
quiet() { "$@" > "$W/log.txt" 2>&1 || { tail -20 "$W/log.txt"; exit 1; }; }

echo "== synthetic corpus (source words map one-to-one, target order reversed) -> $W/text"
python -m fairseq_rela.toy "$W/text"
quiet fairseq-preprocess --source-lang src --target-lang tgt --trainpref "$W/text/train" \
    --validpref "$W/text/valid" --testpref "$W/text/test" --destdir "$W/bin" --workers 1
for act in rela softmax; do
  echo "== train rela_transformer_tiny, --attention-activation $act"
  quiet fairseq-train "$W/bin" --user-dir "$USER_DIR" --arch rela_transformer_tiny --attention-activation $act \
      --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr 2e-3 --lr-scheduler inverse_sqrt \
      --warmup-updates 100 --max-tokens 1000 --dropout 0.0 --max-epoch 20 --seed 1 --cpu \
      --no-epoch-checkpoints --save-dir "$W/ckpt-$act" --no-progress-bar
  echo "== beam search (beam 4) on the 41 test sentences, BLEU"
  fairseq-generate "$W/bin" --user-dir "$USER_DIR" --path "$W/ckpt-$act/checkpoint_last.pt" --beam 4 \
      --gen-subset test --cpu --required-batch-size-multiple 1 > "$W/gen-$act.txt" 2>>"$W/log.txt"
  grep -c '^H-' "$W/gen-$act.txt" | sed 's/^/   hypotheses: /'
  grep '^H-' "$W/gen-$act.txt" | sort -t- -k2 -n | cut -f3 > "$W/hyp-$act.txt"
  sacrebleu "$W/text/test.tgt" -i "$W/hyp-$act.txt" -m bleu -b | sed 's/^/   sacreBLEU: /'
done
echo "done: outputs in $W/"
