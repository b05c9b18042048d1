#!/usr/bin/env bash
# Install, then train tiny ReLA-g and softmax models on a synthetic corpus made here, decode them
# with beam search, score BLEU, analyse their attention (weights and norms) and score word
# alignments against the corpus' known alignments.  About two minutes on 2 CPU cores.
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
  echo "== attention statistics and alignment sweep (teacher-forced) -> $W/analysis-$act/"
  fairseq-rela-analyze "$W/bin" --user-dir "$USER_DIR" --path "$W/ckpt-$act/checkpoint_last.pt" --gen-subset test \
      --output-dir "$W/analysis-$act" --gold-alignment "$W/text/test.align" --gold-base 0 --plot-sentences 0 --html \
      --cpu --no-progress-bar 2>>"$W/log.txt" | sed 's/^/   /'
  echo "== alignments from stock fairseq-generate (norms, last layer, predicted token), AER:"
  fairseq-generate "$W/bin" --user-dir "$USER_DIR" --task translation_alignment --path "$W/ckpt-$act/checkpoint_last.pt" \
      --score-reference --print-alignment --alignment-source norms --gen-subset test --cpu \
      > "$W/align-$act.txt" 2>>"$W/log.txt"
  fairseq-rela-aer --gold "$W/text/test.align" --gold-base 0 --hyp "$W/align-$act.txt" > "$W/aer-$act.txt"
  sed 's/^/   /' "$W/aer-$act.txt"
done
echo "done: outputs in $W/"
