#!/usr/bin/env bash
# Run ON the GPU machine (no network; Python 3.12 with CUDA torch, numpy, cython, sacrebleu,
# sentencepiece already there): install the carried wheels, build fairseq-fixed from its source
# (C++/Cython extensions only, no CUDA extensions) and fairseq-rela into $SITE.  Idempotent.
#   source scripts/gpu/setup.sh      # then fairseq-train, fairseq-rela-analyze ... are on PATH
# Carry .gpu (made here by scripts/gpu/fetch_wheels.sh, then scripts/gpu/build_site.sh) with the call.
SITE=${FAIRSEQ_RELA_SITE:-/tmp/site}
_here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
if [ ! -f "$SITE/.fairseq_rela_ok" ] && [ -f "$_here/.gpu/site312.tar.gz" ]; then
  # Fast path: the folder scripts/gpu/build_site.sh prebuilt (seconds).
  mkdir -p "$SITE" && tar xzf "$_here/.gpu/site312.tar.gz" -C "$SITE" && touch "$SITE/.fairseq_rela_ok"
  echo "gpu setup: unpacked the prebuilt site into $SITE"
fi
if [ ! -f "$SITE/.fairseq_rela_ok" ]; then
  # Slow path (~3 min): build fairseq from its source on the GPU machine.
  _t0=$(date +%s)
  # One pip call (a second one into the same --target skips existing folders such as bin/).
  # No CUDA_HOME: skip fairseq's CUDA extensions (non-autoregressive models only), minutes of nvcc.
  env -u CUDA_HOME MAX_JOBS=16 python3 -m pip install -q --no-index --no-deps --no-cache-dir \
      --disable-pip-version-check --no-build-isolation --target "$SITE" "$_here"/.gpu/wheels/*.whl \
      "$_here"/.gpu/wheels/antlr4-python3-runtime-*.tar.gz "$_here"/.gpu/wheels/fairseq_fixed-*.tar.gz \
      || return 1 2>/dev/null || exit 1
  touch "$SITE/.fairseq_rela_ok"
  echo "gpu setup: installed in $SITE in $(( $(date +%s) - _t0 )) s"
fi
# fairseq's commands and ours, run from the checkout (PYTHONPATH) so the plugin is always this tree's.
mkdir -p "$SITE/bin"
for _c in train generate interactive preprocess; do
  [ -x "$SITE/bin/fairseq-$_c" ] || printf '#!/bin/sh\nexec python3 -m fairseq_cli.%s "$@"\n' $_c > "$SITE/bin/fairseq-$_c"
done
for _c in analyze aer; do printf '#!/bin/sh\nexec python3 -m fairseq_rela.cli.%s "$@"\n' $_c > "$SITE/bin/fairseq-rela-$_c"; done
chmod +x "$SITE"/bin/fairseq-*
export PYTHONPATH="$_here:$PYTHONPATH"
python3 -c 'import torch, fairseq, fairseq_rela; print("gpu setup:", torch.__version__, torch.cuda.get_device_name(0), "fairseq", fairseq.__version__)'
