"""fairseq_rela.corpus: streaming readers, filters, parallel SentencePiece encoding, resumable downloads and
archive checks against a local HTTP server (127.0.0.1 only), the Hugging Face path on a local dataset in the
hub's layout; and the recipe's download paths run through examples/reproduce/recipe.py, offline."""
import contextlib
import gzip
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from fairseq_rela import corpus
from tests.helpers import REPO, SHARED_DATA

RECIPE = REPO / "examples" / "reproduce" / "recipe.py"


# ---------------------------------------------------------------- a local server
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if srv.cut_next:  # the connection drops half-way (Content-Length promised more)
            srv.cut_next -= 1
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(files, ranges=True, cut=0, limit_s=120):
    """An HTTP server on 127.0.0.1 (a free port) serving ``files`` (path -> bytes); it stops when the block
    ends, or by itself after ``limit_s`` seconds."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.ranges, srv.cut_next, srv.requests = files, ranges, cut, []
    srv.timeout = 1
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    stopper = threading.Timer(limit_s, srv.shutdown)
    stopper.daemon = True
    stopper.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        stopper.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tgz(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---------------------------------------------------------------- reading, filters, encoding
@pytest.mark.unit
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_lines_split_on_newline_only(tmp_path, gz):
    rows = ["a\x85b", "c\u2028d", "e\rf", "", "last"]
    data = ("\n".join(rows[:-1]) + "\r\n" + rows[-1]).encode()  # CRLF once, no final newline
    path = tmp_path / ("x.gz" if gz else "x")
    (gzip.open if gz else open)(path, "wb").write(data)
    assert list(corpus.lines(path)) == rows
    path.write_bytes(b"ok\nbad \xff here\n") if not gz else gzip.open(path, "wb").write(b"ok\nbad \xff here\n")
    with pytest.raises(corpus.CorpusError, match=r"x(\.gz)?:2: not UTF-8"):
        list(corpus.lines(path))


@pytest.mark.unit
def test_parallel_refuses_files_of_different_lengths(tmp_path):
    (tmp_path / "a").write_text("1\n2\n3\n")
    (tmp_path / "b").write_text("1\n2\n")
    assert list(corpus.parallel(tmp_path / "a", tmp_path / "a"))[2] == ("3", "3")
    with pytest.raises(corpus.CorpusError, match=r"not parallel: .*b ends after 2 lines"):
        list(corpus.parallel(tmp_path / "a", tmp_path / "b"))


@pytest.mark.unit
def test_filters_and_hold_back_stream():
    counts = {}
    pairs = [("a", "b"), ("", "x"), ("x" * 10, "y"), ("long" * 400, "long" * 400), ("ok", "fine")]
    kept = list(corpus.filtered(iter(pairs), corpus.keep_training_pair, counts))
    assert kept == [("a", "b"), ("ok", "fine")] and counts == {"read": 5, "dropped": 3}
    assert list(corpus.filtered(iter(pairs[2:3]), lambda s, t: corpus.keep_training_pair(s, t, max_ratio=None), {}))
    assert corpus.clean(" a\x85b \u2028 c\r") == "a b c"
    tail = []
    seen = []

    def source():
        for i in range(10):
            seen.append(i)
            yield i

    out = corpus.hold_back(source(), 3, tail)
    assert next(out) == 0 and seen == [0, 1, 2, 3]  # streamed: one item ahead of the held-back ones
    assert list(out) == list(range(1, 7)) and tail == [7, 8, 9]


def _square_all(chunk):
    return [x * x for x in chunk]


@pytest.mark.unit
def test_ordered_map_keeps_order_and_bounds_what_is_under_way():
    fed = []

    def items():
        for i in range(40):
            fed.append(i)
            yield [i, i + 1]

    out = corpus.ordered_map(_square_all, items(), 2)
    assert next(out) == [0, 1] and len(fed) <= 2 * 2  # at most 2 x processes submitted ahead
    assert list(out) == [[i * i, (i + 1) ** 2] for i in range(1, 40)]
    assert list(corpus.ordered_map(_square_all, iter([[3]]), 1)) == [[9]]


@pytest.mark.unit
def test_encode_file_in_chunks_on_threads_equals_one_line_at_a_time(tmp_path):
    import sentencepiece as spm

    text = [f"sentence number {i} with words like {'abc' * (i % 5)} and {i * 7}" for i in range(300)]
    text[5] = "hat\x85inside"  # one line, even with U+0085
    (tmp_path / "train").write_text("\n".join(text) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "train"), model_prefix=str(tmp_path / "m"), vocab_size=60,
                                   model_type="unigram", minloglevel=2, hard_vocab_limit=False)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    n = corpus.encode_file(sp, tmp_path / "train", tmp_path / "out", threads=2, chunk=7)
    assert n == 300
    expected = [" ".join(sp.encode(line, out_type=str)) for line in text]
    assert list(corpus.lines(tmp_path / "out")) == expected
    with pytest.raises(corpus.CorpusError, match="--workers 0"):
        corpus.workers(0)
    assert corpus.workers(None) >= 1 and corpus.workers(3) == 3


# ---------------------------------------------------------------- downloads and archives
PAYLOAD = os.urandom(300_000)


@pytest.mark.unit
def test_download_resumes_a_cut_transfer(tmp_path):
    dest = tmp_path / "f.bin"
    with serve({"/f.bin": PAYLOAD}, cut=1) as (srv, base):
        with pytest.raises(corpus.CorpusError, match=r"incomplete after 1 attempts .*rerun to resume"):
            corpus.download(base + "/f.bin", dest, attempts=1, log=lambda m: None)
        part = tmp_path / "f.bin.part"
        assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)  # nothing looks whole
        have = part.stat().st_size
        logged = []
        corpus.download(base + "/f.bin", dest, attempts=1, log=logged.append)  # the rerun
        assert srv.requests == [None, f"bytes={have}-"] and "resuming at byte" in logged[0]
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    with serve({"/f.bin": PAYLOAD}, cut=1) as (srv, base):  # within one call: attempts go on
        corpus.download(base + "/f.bin", tmp_path / "g.bin", log=lambda m: None)
        assert len(srv.requests) == 2 and srv.requests[1].startswith("bytes=")
    assert (tmp_path / "g.bin").read_bytes() == PAYLOAD


@pytest.mark.unit
def test_download_restarts_where_ranges_are_ignored(tmp_path):
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes of another file")
    logged = []
    with serve({"/f.bin": PAYLOAD}, ranges=False) as (srv, base):
        corpus.download(base + "/f.bin", dest, attempts=1, log=logged.append)
    assert dest.read_bytes() == PAYLOAD and "does not resume" in logged[0]


@pytest.mark.unit
def test_download_offline_is_one_line_at_once(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/de-en.tgz"
    start = time.time()
    assert "unreachable" in corpus.reachable(url)
    with pytest.raises(corpus.CorpusError, match=r"de-en.tgz: cannot download \(.*refused"):
        corpus.download(url, tmp_path / "x.tgz", log=lambda m: None)
    with serve({}) as (_, base):
        with pytest.raises(corpus.CorpusError, match="HTTP 404"):
            corpus.download(base + "/missing.tgz", tmp_path / "x.tgz", log=lambda m: None)
    assert time.time() - start < 10 and not list(tmp_path.iterdir())


@pytest.mark.unit
def test_extract_verifies_the_archive(tmp_path):
    members = {"dir/a.txt": b"alpha\n" * 5000, "dir/b.txt": b"beta\n" * 5000, "dir/other": b"x"}
    good = tgz(members)
    (tmp_path / "good.tgz").write_bytes(good)
    out = tmp_path / "out"
    out.mkdir()
    got = corpus.extract(tmp_path / "good.tgz", out, ["a.txt", "b.txt"])
    assert sorted(p.name for p in got) == ["a.txt", "b.txt"] and (out / "b.txt").read_bytes() == members["dir/b.txt"]
    with pytest.raises(corpus.CorpusError, match="no c.txt inside"):
        corpus.extract(tmp_path / "good.tgz", out, ["a.txt", "c.txt"])
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for name, data in (("cut.tgz", good[: len(good) // 2]), ("flipped.tgz", bytes(flipped)), ("html.tgz", b"<html>")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(corpus.CorpusError, match=rf"{name}: corrupt or truncated archive .*delete it and rerun"):
            corpus.extract(tmp_path / name, out, ["a.txt", "b.txt"])


# ---------------------------------------------------------------- Hugging Face, local
def hub_layout(root: Path, config: str, rows, shards=2):
    """A dataset folder as the hub holds wmt/wmt14: README.md configs, CONFIG/train-*.parquet with a
    ``translation`` dict per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / config).mkdir(parents=True)
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n  - split: train\n"
                                    f"    path: {config}/train-*\n---\n")
    step = (len(rows) + shards - 1) // shards
    for i in range(shards):
        part = rows[i * step:(i + 1) * step]
        pq.write_table(pa.table({"translation": part}), root / config / f"train-{i:05d}-of-{shards:05d}.parquet")


@pytest.mark.unit
def test_hf_pairs_reads_a_hub_layout_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rows = [{"de": f"Satz {i}\x85mit", "en": f"sentence {i}"} for i in range(25)]
    hub_layout(tmp_path / "wmt14", "de-en", rows)
    got = list(corpus.hf_pairs(str(tmp_path / "wmt14"), "de-en", "train", "en", "de", batch=4))
    assert got == [(r["en"], r["de"]) for r in rows]
    with pytest.raises(corpus.CorpusError, match="lacks fr"):
        list(corpus.hf_pairs(str(tmp_path / "wmt14"), "de-en", "train", "fr", "de"))


# ---------------------------------------------------------------- the recipe's download paths, offline
def recipe(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, str(RECIPE), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def lines(path):
    return list(corpus.lines(path))


def sacrebleu_cache(root: Path, test_set: str, langpair: str, src, ref):
    """``sacrebleu -t TEST_SET`` as sacrebleu's cache holds it once downloaded and processed."""
    name = test_set.replace("/", "_")
    d = root / test_set
    d.mkdir(parents=True)
    n = len(src)
    for field, rows in (("src", src), ("ref", ref), ("docid", ["doc"] * n), ("genre", ["news"] * n),
                        ("origlang", ["en"] * n)):
        (d / f"{name}.{langpair}.{field}").write_text("".join(r + "\n" for r in rows), encoding="utf-8")


@pytest.mark.e2e
@pytest.mark.realdata
def test_recipe_hugging_face_and_sacrebleu_paths(tmp_path):
    """en-de without --corpus: training text from a local copy of the hub's wmt/wmt14 de-en layout through
    datasets.load_dataset, the test sets from `sacrebleu -t wmt13|wmt14/full --echo` on a laid-out cache."""
    news = SHARED_DATA / "wmt-news"
    de, en = lines(news / "newssyscomb2009.de.gz"), lines(news / "newssyscomb2009.en.gz")
    hub_layout(tmp_path / "wmt14", "de-en", [{"de": d, "en": e} for d, e in zip(de, en)])
    cache = tmp_path / "sacrebleu"
    v_en, v_de = lines(news / "newstest2013.en.gz"), lines(news / "newstest2013.de.gz")
    t_en, t_de = lines(news / "newstest2014.en.gz"), lines(news / "newstest2014.de.gz")
    sacrebleu_cache(cache, "wmt13", "en-de", v_en, v_de)
    sacrebleu_cache(cache, "wmt14/full", "en-de", t_en, t_de)
    env = {"HF_HOME": str(tmp_path / "hf"), "SACREBLEU": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    work = tmp_path / "work"
    args = ("prepare", "--pair", "en-de", "--work", work, "--vocab-size", "500", "--workers", "2")
    proc = recipe(*args, "--hf-dataset", tmp_path / "wmt14", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pdir = work / "en-de"
    report = json.loads((pdir / "prepared.json").read_text())["pairs"]
    assert report["train_read"] == len(de) and report["test"] == 3003 and report["valid"] == len(v_en)
    assert lines(pdir / "data/test.en") == [corpus.clean(x) for x in t_en]
    assert lines(pdir / "data/test.de") == [corpus.clean(x) for x in t_de]
    src, tgt = lines(pdir / "data/train.en"), lines(pdir / "data/train.de")
    i = src.index(corpus.clean(en[301]))  # the pair with U+0085 in its German side: still paired
    assert tgt[i] == corpus.clean(de[301]) and "\x85" in de[301]
    assert json.loads((pdir / "spm/step.json").read_text())["report"]["workers"] == 2
    assert "workers=2" in (pdir / "preprocess.log").read_text()  # fairseq-preprocess --workers 2

    # offline, nothing cached: one line within seconds (the hub at a closed port stands for no network)
    start = time.time()
    proc = recipe(*args[:4], tmp_path / "work2", *args[5:], env=env | {"HF_HOME": str(tmp_path / "hf-empty")},
                  timeout=60)  # the hub name of pairs.py
    err = proc.stderr.strip().split("\n")
    assert proc.returncode == 1 and len(err) == 1 and time.time() - start < 30, proc.stderr[-2000:]
    assert err[0].startswith("recipe.py: error: Hugging Face dataset wmt/wmt14 de-en") and "unreachable" in err[0]


@pytest.mark.e2e
@pytest.mark.realdata
def test_recipe_europarl_download_resumes_and_checks_the_archive(tmp_path):
    euro, gold = SHARED_DATA / "europarl", SHARED_DATA / "rwth-deen"
    de = lines(euro / "europarl-v7-head20k.de.gz")[:1200] + lines(gold / "test.de")[:2]
    en = lines(euro / "europarl-v7-head20k.en.gz")[:1200] + lines(gold / "test.en")[:2]
    archive = tgz({"europarl-v7.de-en.de": "".join(x + "\n" for x in de).encode(),
                   "europarl-v7.de-en.en": "".join(x + "\n" for x in en).encode()})
    args = ("prepare", "--pair", "europarl-de-en", "--rwth", gold, "--vocab-size", "500", "--valid-lines", "40",
            "--workers", "2")
    with serve({"/v7/de-en.tgz": archive, "/bad/de-en.tgz": archive[: len(archive) // 3]}, cut=1) as (srv, base):
        proc = recipe(*args, "--work", tmp_path / "w", "--europarl-url", base + "/v7/de-en.tgz")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "resuming at byte" in proc.stdout and srv.requests[1].startswith("bytes=")
        report = json.loads((tmp_path / "w/europarl-de-en/prepared.json").read_text())["pairs"]
        assert report["europarl_read"] == 1202 and report["removed_empty_or_rwth"] >= 2 and report["valid"] == 40
        assert report["train"] + report["valid"] == 1202 - report["removed_empty_or_rwth"]
        requests = len(srv.requests)
        proc = recipe(*args, "--work", tmp_path / "w", "--europarl-url", base + "/v7/de-en.tgz")
        assert proc.returncode == 0 and len(srv.requests) == requests  # done: nothing downloaded again

        proc = recipe(*args, "--work", tmp_path / "bad", "--europarl-url", base + "/bad/de-en.tgz")  # truncated
        err = proc.stderr.strip().split("\n")
        assert proc.returncode == 1 and len(err) == 1 and "Traceback" not in proc.stderr
        assert "de-en.tgz: corrupt or truncated archive" in err[0] and "delete it and rerun" in err[0]
        assert not (tmp_path / "bad/europarl-de-en/raw").exists()
    start = time.time()
    proc = recipe(*args, "--work", tmp_path / "off", "--europarl-url", f"http://127.0.0.1:{closed_port()}/de-en.tgz",
                  timeout=60)
    err = proc.stderr.strip().split("\n")
    assert proc.returncode == 1 and len(err) == 1 and time.time() - start < 30
    assert "unreachable" in err[0] and "--corpus DIR" in err[0]


@pytest.mark.unit
def test_corpus_module_is_torch_free():
    code = "import sys, fairseq_rela.corpus; print(sorted(m for m in ('torch', 'fairseq') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.unit
def test_training_pair_filter_boundaries():
    """At the limits: a side of exactly max_chars characters and a length ratio of exactly max_ratio are kept,
    one character more is dropped (issue 36: a `>=` for `>` went unnoticed)."""
    keep = corpus.keep_training_pair
    assert keep("x" * 1500, "y" * 1500) and not keep("x" * 1501, "y" * 1500) and not keep("x" * 1500, "y" * 1501)
    assert keep("x" * 10, "y" * 10, max_chars=10) and not keep("x" * 11, "y" * 11, max_chars=10)
    assert keep("x" * 30, "y" * 10) and not keep("x" * 31, "y" * 10) and not keep("x" * 10, "y" * 31)
    assert keep("x" * 31, "y" * 10, max_ratio=None)
