"""Shared non-fixture helpers of the test suite (fixtures live in conftest.py).  Test files import from
here, never from one another."""
import os
import subprocess
import sys
from pathlib import Path

import torch
from fairseq import options, tasks
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
USER_DIR = str(REPO / "fairseq_rela")
BIN = Path(sys.executable).parent
SHARED_DATA = Path(os.environ.get("FAIRSEQ_RELA_DATA", REPO.parent / "shared" / "data"))

TRAIN_ARGS = (
    "--arch", "rela_transformer_tiny", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "1.0",
    "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--max-tokens", "1000",
    "--dropout", "0.0", "--seed", "1", "--cpu",
    "--no-progress-bar", "--log-interval", "50", "--no-epoch-checkpoints",
)

# a tiny roberta masked LM on the toy corpus's source side (mlm_data), one sentence per sample
MLM_ARGS = (
    "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "roberta_base", "--encoder-layers", "2",
    "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
    "--sample-break-mode", "eos", "--tokens-per-sample", "64", "--max-positions", "64",
)

# hypothesis settings of the parser fuzz tests (test_aer.py, test_links.py)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def run_cli(name: str, *args: str, cwd=None, check=True, input=None) -> subprocess.CompletedProcess:
    """Run an installed console script (fairseq-train, fairseq-rela-aer, ...) and return its result.

    Trainings run with ``--data-buffer-size 0`` (unless given): a run stopped mid-epoch (``--max-update``)
    leaves fairseq's batch-prefetch thread inside torch at interpreter exit, and on a loaded machine
    the finished process then aborts ("terminate called without an active exception", status -6).
    """
    if name == "fairseq-train" and "--data-buffer-size" not in map(str, args):
        args = (*args, "--data-buffer-size", "0")
    proc = subprocess.run(
        [str(BIN / name), *map(str, args)], cwd=cwd, capture_output=True, text=True, input=input,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def last_error_line(proc, prog: str) -> str:
    """The one `prog: error:` line a failed console script ended with (no traceback)."""
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prog}: error: "), line
    return line


def build(toy_data, *extra):
    """An untrained model (seed 0) and its task on the binarised toy corpus, built in-process."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, [str(toy_data / "bin"), "--user-dir", USER_DIR, "--arch", "rela_transformer_tiny", "--cpu", *extra]
    )
    task = tasks.setup_task(args)
    torch.manual_seed(0)
    model = task.build_model(args).eval()
    return task, model


def build_mlm(mlm_data, *extra):
    """An untrained tiny roberta (seed 0) and its masked_lm task on ``mlm_data``, built in-process."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(mlm_data / "bin"), "--user-dir", USER_DIR, *MLM_ARGS, "--cpu", *extra])
    task = tasks.setup_task(args)
    torch.manual_seed(0)
    model = task.build_model(args).eval()
    return task, model


def batch(task, n=6):
    """The first ``n`` sentences of the valid split, collated."""
    ds = task.load_dataset("valid") or task.dataset("valid")
    return ds.collater([ds[i] for i in range(n)])


def generate_alignments(toy_data, ckpt, *args):
    """stdout of fairseq-generate --task translation_alignment --print-alignment on the toy test split."""
    proc = run_cli("fairseq-generate", toy_data / "bin", "--user-dir", USER_DIR, "--task", "translation_alignment",
                   "--path", ckpt, "--print-alignment", "--cpu", "--required-batch-size-multiple", "8",
                   "--gen-subset", "test", "--max-tokens", "300", *args)
    return proc.stdout


def independent_sparsity(ckpt, toy_data, kind_module="encoder_attn", layer=0):
    """Sparsity of one attention straight from need_head_weights in a plain forward (no recorder)."""
    from fairseq_rela.analysis.runner import load_checkpoint

    model, task = load_checkpoint(str(ckpt), data=str(toy_data / "bin"), device="cpu")
    task.load_dataset("test")
    ds = task.dataset("test")
    zeros = total = 0
    captured = {}
    attn = getattr(model.decoder.layers[layer], kind_module)
    for i in range(len(ds)):
        sample = ds.collater([ds[i]])
        net = sample["net_input"]
        with torch.no_grad():
            enc = model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
            handle = attn.register_forward_hook(lambda m, a, kw, out: captured.update(kw=kw), with_kwargs=True)
            model.decoder(net["prev_output_tokens"], encoder_out=enc)
            handle.remove()
            kw = dict(captured["kw"], need_head_weights=True)
            _, w = attn(**kw)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total, len(ds)


class ParsedPage:
    """An HTML page read by the standard library's parser: well-formedness checked while parsing
    (every non-void element closed, in order), tags with their attributes, the text, the scripts."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self, text: str):
        from html.parser import HTMLParser

        page = self
        self.tags, self.text, self.scripts, self.problems = [], [], [], []
        stack = []

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                page.tags.append((tag, dict(attrs)))
                if tag not in ParsedPage.VOID:
                    stack.append(tag)

            def handle_startendtag(self, tag, attrs):
                page.tags.append((tag, dict(attrs)))

            def handle_endtag(self, tag):
                if not stack or stack[-1] != tag:
                    page.problems.append(f"</{tag}> closes {stack[-1] if stack else 'nothing'}")
                else:
                    stack.pop()

            def handle_data(self, data):
                if stack and stack[-1] in ("script", "style"):
                    if stack[-1] == "script":
                        page.scripts.append((page.tags[-1][1], data))
                else:
                    page.text.append(data)

        parser = Parser(convert_charrefs=True)
        parser.feed(text)
        parser.close()
        self.problems += [f"<{t}> never closed" for t in stack]

    def find(self, tag: str, **attrs):
        """Attributes of every ``tag`` whose attributes include ``attrs`` (``data_x`` for ``data-x``)."""
        want = {k.replace("_", "-"): str(v) for k, v in attrs.items()}
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in want.items())]

    def external_references(self):
        """Attributes and CSS that would load something from elsewhere (anything but #fragments, data:)."""
        bad = []
        for tag, attrs in self.tags:
            for name in ("src", "href", "action", "srcset", "poster", "data", "formaction", "xlink:href"):
                value = (attrs.get(name) or "").strip()
                if value and not value.startswith("#") and not value.startswith("data:"):
                    bad.append(f"<{tag} {name}={value!r}>")
            if tag == "link":
                bad.append(f"<link {attrs}>")
        for tag, _ in self.tags:
            if tag in ("iframe", "object", "embed", "base"):
                bad.append(f"<{tag}>")
        return bad


def chromium_binary():
    """Debian's headless chromium (``$FAIRSEQ_RELA_CHROMIUM`` to name another): the path, or a test failure
    that says how to get one.  Only a declaration that the machine has none turns the failure into a
    reported skip: ``FAIRSEQ_RELA_NO_BROWSER=1``, or the reason ``scripts/install.sh`` wrote to
    ``$VENV/no-browser.txt`` when it could not install chromium."""
    import shutil

    import pytest

    found = shutil.which(os.environ.get("FAIRSEQ_RELA_CHROMIUM", "chromium"))
    if found:
        return found
    if os.environ.get("FAIRSEQ_RELA_NO_BROWSER") == "1":
        pytest.skip("FAIRSEQ_RELA_NO_BROWSER=1: this machine has no chromium, the page was not rendered")
    declared = Path(sys.prefix) / "no-browser.txt"  # written by scripts/install.sh when it could not install one
    if declared.is_file():
        pytest.skip(f"no chromium, the page was not rendered: {declared.read_text().strip()}")
    pytest.fail("chromium is not installed: the report must be rendered by a real browser. Install it "
                "(`apt-get install -y chromium`, which `bash scripts/install.sh` does as root where apt works) "
                "or set FAIRSEQ_RELA_NO_BROWSER=1 on a machine that cannot have one")


def render_in_chromium(page: Path, workdir: Path, size=(1200, 1600)):
    """Load ``page`` in headless chromium: (the DOM after its scripts ran, the console messages it logged,
    a screenshot as an (H, W, 3) uint8 array)."""
    import re

    import numpy as np
    from PIL import Image

    binary = chromium_binary()
    common = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
              f"--user-data-dir={workdir / 'chromium-profile'}", f"--window-size={size[0]},{size[1]}",
              "--enable-logging=stderr", "--v=0"]
    url = page.resolve().as_uri()
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-3000:]
    shot = workdir / f"screenshot-{page.stem}.png"
    if shot.exists():
        shot.unlink()
    run = subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0 and shot.exists(), run.stderr[-3000:]
    console = [line for out in (dom.stderr, run.stderr) for line in out.splitlines()
               if re.search(r":CONSOLE[:(]", line)]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    return dom.stdout, console, pixels


def heatmap_colours(pixels, block: int = 5) -> int:
    """Distinct colours of the report's white-to-blue scale that fill a block x block square of a
    screenshot: heatmap cells (and shaded table cells); text and its anti-aliasing never do."""
    import numpy as np

    rgb = np.asarray(pixels).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    h, w = code.shape
    core = code[: h - block + 1, : w - block + 1]
    uniform = np.ones(core.shape, bool)
    for di in range(block):
        for dj in range(block):
            uniform &= code[di: di + h - block + 1, dj: dj + w - block + 1] == core
    r, b = (core >> 16) & 255, core & 255
    return len(np.unique(core[uniform & (b - r > 25) & (core != 0xFFFFFF)]))


def damage_tensor_bytes(src, dst, value: float = 2e28) -> str:
    """Copy the checkpoint ``src`` to ``dst`` with 4 bytes in the middle of its largest tensor storage
    overwritten by the float32 ``value``: what a few flipped bits on disk do.  torch.load reads it
    without complaint (it checks no CRC).  Returns the zip member changed."""
    import struct
    import zipfile

    data = bytearray(Path(src).read_bytes())
    with zipfile.ZipFile(src) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the member's bytes (torch stores them uncompressed)
    at = start + (info.file_size // 2) // 4 * 4
    data[at: at + 4] = struct.pack("<f", value)
    Path(dst).write_bytes(bytes(data))
    return info.filename


def resave_with(src, dst, name: str, value: float) -> None:
    """Copy the fairseq checkpoint ``src`` to ``dst`` (a valid file, CRCs right) with one value of the
    model parameter ``name`` set to ``value`` (inf, nan, 2e28)."""
    import fairseq_rela.checkpoint

    fairseq_rela.checkpoint.allow_fairseq_checkpoints()
    state = torch.load(src, map_location="cpu", weights_only=True)
    state["model"][name].view(-1)[0] = value
    torch.save(state, dst)
