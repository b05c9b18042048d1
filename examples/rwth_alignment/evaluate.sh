#!/usr/bin/env bash
# Score trained models of the RWTH experiment: BLEU on the 508 RWTH pairs (beam 4), the
# teacher-forced AER sweep (layer x weights/norms x AWO/AWI, per layer and per head) against the
# gold links, eflomal trained on the same text as a baseline, then a summary table and plot.
#   bash examples/rwth_alignment/evaluate.sh WORK DATA [MODELS...]   (defaults: work/rwth ../shared/data, all)
# A MODEL is VARIANT (its checkpoint_last.pt) or VARIANT@UPDATES (the snapshot train.sh left);
# results go to WORK/analysis-MODEL/. By default every snapshot is scored. The eflomal baseline
# runs with the first model; EFLOMAL=0 skips it.
set -euo pipefail
W=${1:-work/rwth}; DATA=${2:-../shared/data}; shift 2 || true
MODELS=${*:-$(for c in "$W"/ckpt-*/checkpoint_[0-9]*.pt; do
  v=$(basename "$(dirname "$c")"); n=$(basename "$c" .pt); echo "${v#ckpt-}@${n#checkpoint_}"; done)}
HERE="$(cd "$(dirname "$0")" && pwd)"; USER_DIR="$HERE/../../fairseq_rela"
GOLD="$DATA/rwth-deen/alignment.talp"
first=${EFLOMAL:-1}
for m in $MODELS; do
  v=${m%@*}; ckpt="$W/ckpt-$v/checkpoint_last.pt"
  [ "$m" != "$v" ] && ckpt="$W/ckpt-$v/checkpoint_${m#*@}.pt"
  [ -f "$ckpt" ] || { echo "evaluate.sh: error: $ckpt: no such checkpoint (train.sh writes it)" >&2; exit 1; }
  out="$W/analysis-$m"; mkdir -p "$out"
  echo "== $m ($ckpt)"
  fairseq-generate "$W/bin" --user-dir "$USER_DIR" --path "$ckpt" --gen-subset test --beam 4 --cpu \
      --required-batch-size-multiple 1 --post-process sentencepiece --max-tokens 4000 > "$out/generate.txt" 2>"$out/generate.log"
  grep '^D-' "$out/generate.txt" | sort -t- -k2 -n | cut -f3 > "$out/hyp.en"
  n=$(wc -l < "$out/hyp.en"); ref=$(wc -l < "$W/rwth.tok.en")
  [ "$n" = "$ref" ] || { echo "evaluate.sh: error: $out/hyp.en: $n translations for $ref sentences" >&2; exit 1; }
  sacrebleu "$W/rwth.tok.en" -i "$out/hyp.en" -m bleu -b --tokenize none --force > "$out/bleu.txt"
  echo "   BLEU (tokenised, $n RWTH pairs): $(cat "$out/bleu.txt")"
  baseline=()
  if [ $first = 1 ]; then baseline=(--eflomal-train "$W/train.tok" --eflomal-test "$W/rwth.tok"); first=0; fi
  fairseq-rela-analyze "$W/bin" --user-dir "$USER_DIR" --path "$ckpt" --gen-subset test --source-lang de \
      --target-lang en --gold-alignment "$GOLD" "${baseline[@]}" --output-dir "$out" --plot-sentences 0,1 \
      --max-tokens 4000 --cpu --no-progress-bar 2>"$out/analyze.log" | tail -n 12 | sed 's/^/   /'
done
python "$HERE/summarize.py" "$W"
