#!/usr/bin/env bash
# Score trained models of the RWTH experiment: BLEU on the 508 RWTH pairs (beam 4), the
# teacher-forced AER sweep (layer x weights/norms x AWO/AWI, per layer and per head) against the
# gold links, eflomal trained on the same text as a baseline, then a summary table and plot.
#   bash examples/rwth_alignment/evaluate.sh WORK DATA [MODELS...]   (defaults: work/rwth ../shared/data, all)
# A MODEL is VARIANT (its checkpoint_last.pt) or VARIANT@UPDATES (the snapshot train.sh left);
# results go to WORK/translation-MODEL/ (beam output, BLEU) and WORK/analysis-MODEL/ (the sweep and
# its links/). By default every snapshot is scored. VARIANT-en-de models (train.sh with DIRECTION=en-de)
# are scored against the mirrored gold; a De->En model whose En->De twin was scored at the same snapshot
# is also symmetrised with it (bidirectional.py -> WORK/bidirectional-MODEL/). The eflomal baseline
# runs with the first De->En model; EFLOMAL=0 skips it. VALUE_ZEROING=1 adds value zeroing to the analysis
# (fairseq-rela-analyze --value-zeroing: several times slower). The analyzer's log: WORK/analysis-MODEL.log.
set -euo pipefail
W=${1:-work/rwth}; DATA=${2:-../shared/data}; shift 2 || true
MODELS=${*:-$(for c in "$W"/ckpt-*/checkpoint_[0-9]*.pt; do
  v=$(basename "$(dirname "$c")"); n=$(basename "$c" .pt); echo "${v#ckpt-}@${n#checkpoint_}"; done)}
HERE="$(cd "$(dirname "$0")" && pwd)"; USER_DIR="$HERE/../../fairseq_rela"
first=${EFLOMAL:-1}
vz=(); [ "${VALUE_ZEROING:-0}" = 1 ] && vz=(--value-zeroing)
for m in $MODELS; do
  v=${m%@*}; ckpt="$W/ckpt-$v/checkpoint_last.pt"
  [ "$m" != "$v" ] && ckpt="$W/ckpt-$v/checkpoint_${m#*@}.pt"
  [ -f "$ckpt" ] || { echo "evaluate.sh: error: $ckpt: no such checkpoint (train.sh writes it)" >&2; exit 1; }
  case $v in
    *-en-de) src=en; tgt=de; gold="$W/alignment.en-de.talp" ;;  # the gold mirrored by prepare.py
    *) src=de; tgt=en; gold="$DATA/rwth-deen/alignment.talp" ;;
  esac
  [ -f "$gold" ] || { echo "evaluate.sh: error: $gold: no such gold alignment (prepare.py writes the En-De one)" >&2; exit 1; }
  gen="$W/translation-$m"; out="$W/analysis-$m"; mkdir -p "$gen"
  echo "== $m ($ckpt)"
  fairseq-generate "$W/bin" --user-dir "$USER_DIR" --path "$ckpt" --source-lang $src --target-lang $tgt --gen-subset test \
      --beam 4 --cpu --required-batch-size-multiple 1 --post-process sentencepiece --max-tokens 4000 \
      > "$gen/generate.txt" 2>"$gen/generate.log"
  grep '^D-' "$gen/generate.txt" | sort -t- -k2 -n | cut -f3 > "$gen/hyp.$tgt"
  n=$(wc -l < "$gen/hyp.$tgt"); ref=$(wc -l < "$W/rwth.tok.$tgt")
  [ "$n" = "$ref" ] || { echo "evaluate.sh: error: $gen/hyp.$tgt: $n translations for $ref sentences" >&2; exit 1; }
  sacrebleu "$W/rwth.tok.$tgt" -i "$gen/hyp.$tgt" -m bleu -b --tokenize none --force > "$gen/bleu.txt"
  echo "   BLEU (tokenised, $n RWTH pairs): $(cat "$gen/bleu.txt")"
  baseline=()
  if [ $first = 1 ] && [ $src = de ]; then baseline=(--eflomal-train "$W/train.tok" --eflomal-test "$W/rwth.tok"); first=0; fi
  fairseq-rela-analyze "$W/bin" --user-dir "$USER_DIR" --path "$ckpt" --gen-subset test --source-lang $src \
      --target-lang $tgt --gold-alignment "$gold" "${baseline[@]}" "${vz[@]}" --write-links --output-dir "$out" \
      --plot-sentences 0,1 --max-tokens 4000 --cpu --no-progress-bar 2>"$out.log" | tail -n 12 | sed 's/^/   /' \
      || { echo "evaluate.sh: error: fairseq-rela-analyze failed for $m; the end of $out.log:" >&2; tail -n 3 "$out.log" >&2; exit 1; }
done
for m in $MODELS; do  # both directions of one snapshot: their attention links symmetrised
  case ${m%@*} in *-en-de) continue ;; esac
  back="${m%@*}-en-de"; [ "$m" != "${m%@*}" ] && back="$back@${m#*@}"
  [ -d "$W/analysis-$back/links" ] && [ -d "$W/analysis-$m/links" ] || continue
  echo "== $m + $back: symmetrised"
  python "$HERE/bidirectional.py" "$W/analysis-$m" "$W/analysis-$back" --gold "$DATA/rwth-deen/alignment.talp" \
      --out "$W/bidirectional-$m" | grep -e '^- ' | sed 's/^/   /'
done
python "$HERE/summarize.py" "$W"
