#!/usr/bin/env bash
# Run HERE (a machine with PyPI access): download what a GPU machine without network lacks to run
# fairseq-rela (Python 3.12 wheels + the fairseq-fixed source) into .gpu/wheels (git-ignored).
#   bash scripts/gpu/fetch_wheels.sh [PYTHON_VERSION=3.12]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYV=${1:-3.12}
W=.gpu/wheels; mkdir -p "$W"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
for pkg in hydra-core==1.3.2 omegaconf==2.3.0 bitarray==3.12.3 entmax==1.3 cffi==2.1.1 pycparser==3.12 adasplash==0.2.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp $PLAT -d "$W" "$pkg"
done
python3 -m pip download -q --no-deps --no-binary :all: -d "$W" antlr4-python3-runtime==4.9.3   # pure Python, sdist only
# fairseq-fixed's sdist: pip download needs torch to read its metadata, so ask the project's venv.
VENV=${FAIRSEQ_RELA_VENV:-.venv}
"$VENV/bin/python" -m pip download -q --no-deps --no-build-isolation -d "$W" fairseq-fixed==0.12.3.1
ls -la "$W"
