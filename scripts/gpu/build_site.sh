#!/usr/bin/env bash
# Run HERE (x86-64, network): prebuild everything fairseq-rela needs beyond the GPU image (Python 3.12,
# CUDA torch, numpy 2) as one folder, so a fresh GPU machine is ready in seconds instead of ~3 minutes
# of compiling fairseq.  fairseq's Cython/C++ extensions that translation needs (data_utils_fast,
# token_block_utils_fast, libbleu) are compiled against numpy 2 for CPython 3.12; the torch C++
# extensions (libbase, libnat: BASE layers and non-autoregressive models only) are left out.
#   bash scripts/gpu/fetch_wheels.sh && bash scripts/gpu/build_site.sh    -> .gpu/site312.tar.gz
set -euo pipefail
cd "$(dirname "$0")/../.."
PY312=${PY312:-python3.12}; "$PY312" -c "" 2>/dev/null || PY312=$(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 | head -1)
B=$(mktemp -d); S="$B/site"
"$PY312" -m venv "$B/venv"
"$B/venv/bin/pip" -q install --disable-pip-version-check "numpy==2.3.5" "cython==3.1.4" setuptools
"$B/venv/bin/pip" -q install --disable-pip-version-check --no-deps --no-index --no-build-isolation --target "$S" .gpu/wheels/*.whl \
    .gpu/wheels/antlr4-python3-runtime-*.tar.gz
tar xzf .gpu/wheels/fairseq_fixed-*.tar.gz -C "$B"
src=$(echo "$B"/fairseq_fixed-*)
(cd "$src" && "$B/venv/bin/python" - <<'PY'
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

args = ["-std=c++11", "-O3"]
exts = [Extension("fairseq.libbleu", ["fairseq/clib/libbleu/libbleu.cpp", "fairseq/clib/libbleu/module.cpp"],
                  extra_compile_args=args)]
exts += cythonize([Extension(f"fairseq.data.{m}", [f"fairseq/data/{m}.pyx"], language="c++",
                             include_dirs=[numpy.get_include()], extra_compile_args=args)
                   for m in ("data_utils_fast", "token_block_utils_fast")], quiet=True)
setup(name="fairseq-ext", ext_modules=exts, script_args=["build_ext", "--inplace", "-q"])
PY
)
[ -f "$src/fairseq/version.py" ] || echo "__version__ = \"$(cat "$src/fairseq/version.txt")\"" > "$src/fairseq/version.py"
cp -r "$src/fairseq" "$src/fairseq_cli" "$S/"
rm -rf "$S/fairseq/examples" "$S/bin"
find "$S" -name '__pycache__' -prune -exec rm -rf {} +
tar czf .gpu/site312.tar.gz -C "$S" .
rm -rf "$B"
ls -la .gpu/site312.tar.gz
