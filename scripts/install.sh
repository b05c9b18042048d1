#!/usr/bin/env bash
# Install fairseq-rela and everything it needs into a virtual environment (default: .venv).
# Idempotent: a second run only checks.  Usage: bash scripts/install.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${FAIRSEQ_RELA_VENV:-.venv}}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check -q"
stamp="$VENV/.fairseq_rela_deps"
deps_hash=$(sha1sum scripts/install.sh | cut -c1-12)
if [ "$(cat "$stamp" 2>/dev/null)" != "$deps_hash" ]; then
  # CPU build of torch: an unpinned `torch` would pull a multi-GB CUDA build.
  $PIP install "torch==2.13.0"
  # fairseq's real run-time needs, installed first so that fairseq itself can go in with --no-deps
  # (its metadata would otherwise drag in torchaudio and a CUDA torch).  hydra-core/omegaconf are
  # pinned to the versions fairseq's config system was written against; numpy<2 because fairseq's
  # Cython extensions and data utilities predate numpy 2.
  $PIP install "numpy>=1.24,<2" "hydra-core==1.3.2" "omegaconf==2.3.0" cython cffi regex \
      "sacrebleu>=2.3,<3" tqdm bitarray scikit-learn packaging
  # PyPI's fairseq 0.12.2 does not import on Python 3.11 (mutable dataclass defaults);
  # fairseq-fixed is upstream main plus that fix, same import name.
  $PIP install --no-deps --no-build-isolation "fairseq-fixed==0.12.3.1"
  # Sparse baselines, subword model, plots, tests, statistical aligner baseline, TensorBoard logs,
  # NLTK (its AER is the independent reference the scorer is tested against).
  $PIP install --no-deps "entmax==1.3"
  $PIP install "sentencepiece>=0.2" "matplotlib>=3.7" "pytest>=8" "eflomal==2.0.0" tensorboardX "nltk==3.10.4" \
      "sacremoses==0.1.1"  # detokeniser: newstest2014 BLEU in examples/reproduce and examples/replication
  $PIP install "hypothesis==6.170.15"  # property-based fuzzing of the alignment parsers (tests)
  echo "$deps_hash" > "$stamp"
fi
$PIP install --no-deps --no-build-isolation -e .
echo "fairseq-rela installed in $VENV ($("$PY" -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__)'))"
