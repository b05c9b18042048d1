#!/usr/bin/env bash
# Value zeroing end to end on the test suite's synthetic corpus (fairseq_rela/toy.py: known alignments):
# a tiny ReLA-g model (2+2 layers, 64 wide) trained 20 epochs as tests/conftest.py trains it, then
# fairseq-rela-analyze --value-zeroing with the alignment sweep, beside the same analysis without it.
#   bash examples/analysis/value_zeroing_toy/run.sh WORK     (writes WORK/; copies the results here)
set -euo pipefail
W=${1:?usage: run.sh WORK}; HERE="$(cd "$(dirname "$0")" && pwd)"; USER_DIR="$HERE/../../../fairseq_rela"
start=$(date +%s)
mkdir -p "$W"
[ -f "$W/test.align" ] || python -m fairseq_rela.toy "$W"
[ -f "$W/bin/dict.src.txt" ] || fairseq-preprocess --source-lang src --target-lang tgt --trainpref "$W/train" \
    --validpref "$W/valid" --testpref "$W/test" --destdir "$W/bin" --workers 1 > "$W/preprocess.log"
[ -f "$W/ckpt/checkpoint_last.pt" ] || fairseq-train "$W/bin" --user-dir "$USER_DIR" --arch rela_transformer_tiny \
    --optimizer adam --adam-betas '(0.9,0.98)' --clip-norm 1.0 --lr 2e-3 --lr-scheduler inverse_sqrt \
    --warmup-updates 100 --max-tokens 1000 --dropout 0.0 --seed 1 --cpu --no-progress-bar --log-interval 50 \
    --no-epoch-checkpoints --attention-activation rela --max-epoch 20 --save-dir "$W/ckpt" --data-buffer-size 0 \
    > "$W/train.log"
trained=$(date +%s)
for vz in plain value-zeroing; do
  flag=(); [ $vz = value-zeroing ] && flag=(--value-zeroing)
  t0=$(date +%s)
  fairseq-rela-analyze "$W/bin" --user-dir "$USER_DIR" --path "$W/ckpt/checkpoint_last.pt" --gen-subset test \
      --output-dir "$W/analysis-$vz" --gold-alignment "$W/test.align" --gold-base 0 --write-links --no-plots \
      --cpu --no-progress-bar "${flag[@]}" > /dev/null 2> "$W/analysis-$vz.log"
  echo "$vz $(( $(date +%s) - t0 ))" >> "$W/times.txt"
done
cp "$W/analysis-value-zeroing/alignment.txt" "$W/analysis-value-zeroing/stats.txt" "$HERE/"
{ echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(uname -m), $(nproc) CPUs (shared with other jobs)"
  echo "wall time: $(( $(date +%s) - start )) s in all, training $(( trained - start )) s; analysis (s):"
  sed 's/^/  /' "$W/times.txt"; } > "$HERE/run.txt"
rm -f "$W/times.txt"
cat "$HERE/run.txt"
