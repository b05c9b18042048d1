"""The package's layering: data flows one way and the alignment tools are torch-free."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.unit

PACKAGE = REPO / "fairseq_rela"
# lower layers never import higher ones (equal ranks may import each other)
RANKS = {
    "fairseq_rela": 0, "fairseq_rela.errors": 0,
    "fairseq_rela.alignment": 1, "fairseq_rela.checkpoint": 1, "fairseq_rela.toy": 1, "fairseq_rela.corpus": 1,
    "fairseq_rela.seeds": 1,
    "fairseq_rela.activations": 2, "fairseq_rela.normalization": 2, "fairseq_rela.kernels": 2,
    "fairseq_rela.attention": 3, "fairseq_rela.block": 3, "fairseq_rela.contributions": 3,
    "fairseq_rela.config": 4, "fairseq_rela.recording": 4, "fairseq_rela.value_zeroing": 4,
    "fairseq_rela.models": 5,
    "fairseq_rela.tasks": 6,
    "fairseq_rela.analysis": 7,
    "fairseq_rela.cli": 8,
}
TORCH_FREE = ("fairseq_rela.errors", "fairseq_rela.alignment", "fairseq_rela.corpus", "fairseq_rela.seeds")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rank(module: str) -> int:
    while module not in RANKS:
        module = module.rsplit(".", 1)[0]
    return RANKS[module]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fairseq_rela":
                yield from (f"fairseq_rela.{alias.name}" for alias in node.names if alias.name != "__version__")
            else:
                yield node.module


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_upward(path):
    name = _module_name(path)
    if name == "fairseq_rela":  # the package registers models and tasks when fairseq is loaded: that import
        return                  # is conditional and checked by test_package_import_is_light
    upward = [m for m in _imports(path) if m.startswith("fairseq_rela") and _rank(m) > _rank(name)]
    assert not upward, f"{name} (layer {_rank(name)}) imports {upward} from a higher layer"


def test_every_module_has_a_layer():
    for path in MODULES:
        _rank(_module_name(path))  # a module outside RANKS would raise KeyError


@pytest.mark.parametrize("path", [p for p in MODULES if _module_name(p).startswith(TORCH_FREE)],
                         ids=lambda p: _module_name(p))
def test_alignment_modules_do_not_import_torch_or_fairseq(path):
    bad = [m for m in _imports(path) if m.split(".")[0] in ("torch", "fairseq", "fairseq_cli")]
    assert not bad, f"{_module_name(path)} imports {bad}"


def test_package_import_is_light_and_registers_once_fairseq_is_loaded():
    code = ("import sys, fairseq_rela; print(sorted(m for m in ('torch', 'fairseq') if m in sys.modules)); "
            "import fairseq.models as fm, importlib; importlib.reload(fairseq_rela); "
            "print('rela_transformer' in fm.MODEL_REGISTRY)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"], out


def test_aer_and_symmetrize_commands_load_neither_torch_nor_fairseq(tmp_path):
    gold, hyp = tmp_path / "gold.talp", tmp_path / "hyp.txt"
    gold.write_text("1-1 2p2\n")
    hyp.write_text("0-0 1-1\n")
    probe = (
        "import sys, runpy\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_module(sys.argv[0], run_name='__main__')\n"
        "finally:\n"
        "    loaded = sorted(m for m in ('torch', 'fairseq', 'fairseq_cli') if m in sys.modules)\n"
        "    print('LOADED', loaded, file=sys.stderr)\n"
    )
    for argv, expected in ((["fairseq_rela.cli.aer", "--gold", str(gold), "--hyp", str(hyp)], "AER"),
                           (["fairseq_rela.cli.symmetrize", "--forward", str(hyp), "--backward", str(hyp)], "0-0")):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert "LOADED []" in proc.stderr, proc.stderr
        assert expected in proc.stdout, proc.stdout
