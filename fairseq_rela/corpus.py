"""Preparing parallel corpora as streams: memory bounded whatever the corpus size (torch-free).

Readers split on ``\\n`` only (WMT files hold U+0085 inside sentences, which ``str.splitlines()`` and
universal newlines take for line ends), cleaning and filters are generators, SentencePiece encodes
chunks of lines on every core (order kept), downloads resume (HTTP ``Range``) and archives are verified
while they are extracted.  Used by examples/reproduce/recipe.py and the examples' prepare scripts.
"""
import gzip
import http.client
import itertools
import os
import re
import shutil
import signal
import socket
import tarfile
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import deque
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

CHUNK_LINES = 20_000  # lines encoded (and held) at a time
# characters some readers take for line ends (str.splitlines, universal newlines): a space in our files
_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

Pair = Tuple[str, str]
# the WMT news test sets the examples train on (../shared/data/wmt-news; newstest2013 validates, 2014 tests)
WMT_NEWS_TRAIN = ["news-test2008", "newssyscomb2009", "newstest2009", "newstest2010", "newstest2011", "newstest2012",
                  "newstest2015", "newstest2016", "newstest2017", "newstest2018", "newstest2019"]


class CorpusError(ValueError):
    """Bad input, a failed download or a corrupt archive: one line for the user."""


# ---------------------------------------------------------------- reading and writing
def lines(path) -> Iterator[str]:
    """The lines of a UTF-8 text file, ``.gz`` or plain, one at a time: split on ``\\n`` only, the ``\\n``
    (and a ``\\r`` before it) removed; a byte that is not UTF-8 is reported with file and line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    try:
        with opener(path, "rb") as f:
            for n, raw in enumerate(f, 1):  # binary files split on b"\n" only
                yield raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}:{n}: not UTF-8 ({err.reason} at byte {err.start})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise CorpusError(f"{path}: corrupt gzip file after line {n} ({err})") from None


def parallel(src, tgt) -> Iterator[Pair]:
    """Pairs of two line-parallel files, read together; files of different lengths are an error."""
    a, b = lines(src), lines(tgt)
    n = 0
    for n, pair in enumerate(itertools.zip_longest(a, b), 1):
        if pair[0] is None or pair[1] is None:
            short = src if pair[0] is None else tgt
            raise CorpusError(f"{src} and {tgt} are not parallel: {short} ends after {n - 1} lines")
        yield pair


def write_pairs(pairs: Iterable[Pair], src, tgt) -> int:
    """Write ``pairs`` line by line to two files; the number of pairs written."""
    n = 0
    with open(src, "w", encoding="utf-8", newline="\n") as fs, open(tgt, "w", encoding="utf-8", newline="\n") as ft:
        for n, (s, t) in enumerate(pairs, 1):
            fs.write(s + "\n")
            ft.write(t + "\n")
    return n


def write_lines(items: Iterable[str], path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for n, line in enumerate(items, 1):
            f.write(line + "\n")
    return n


def count_lines(path) -> int:
    return sum(1 for _ in lines(path))


# ---------------------------------------------------------------- cleaning and filters
def clean(line: str) -> str:
    """Spacing normalised; every character that some reader may take for a line end becomes a space."""
    return " ".join(_BREAKS.sub(" ", line).split())


def gold_key(line: str) -> str:
    """Case, spacing and punctuation ignored (as for removing RWTH gold sentences from training)."""
    return "".join(c for c in line.lower() if unicodedata.category(c)[0] in "LN")


_PUNCT = re.compile(r"""([.,!?;:"()\[\]{}«»„“”]|(?<=\s)'|'(?=\s)|^'|'$)""")


def split_punctuation(line: str) -> str:
    """Punctuation split off as in the RWTH gold set (so that merging subwords at ``▁`` gives its words)."""
    return " ".join(_PUNCT.sub(r" \1 ", line).split())


def swap_talp(line: str) -> str:
    """A talp gold line with each link's two indices swapped (``3-5 2p4`` -> ``5-3 4p2``): the other direction."""
    links = []
    for link in line.split():
        sep = "p" if "p" in link else "-"
        i, j = link.split(sep)
        links.append(f"{j}{sep}{i}")
    return " ".join(links)


def keep_training_pair(s: str, t: str, max_chars: int = 1500, max_ratio: Optional[float] = 3.0) -> bool:
    """Neither side empty nor over ``max_chars`` characters, length ratio at most ``max_ratio`` (None: any)."""
    if not s or not t or max(len(s), len(t)) > max_chars:
        return False
    return not max_ratio or max(len(s), len(t)) <= max_ratio * min(len(s), len(t))


def filtered(pairs: Iterable[Pair], keep: Callable[[str, str], bool], counts: Dict[str, int]) -> Iterator[Pair]:
    """Pairs for which ``keep`` holds; ``counts["read"]`` and ``counts["dropped"]`` are kept up to date."""
    counts.setdefault("read", 0)
    counts.setdefault("dropped", 0)
    for s, t in pairs:
        counts["read"] += 1
        if keep(s, t):
            yield s, t
        else:
            counts["dropped"] += 1


def hold_back(items: Iterable, n: int, tail: List) -> Iterator:
    """Every item but the last ``n``, streamed; the last ``n`` are appended to ``tail`` at the end."""
    buf: deque = deque()
    for item in items:
        buf.append(item)
        if len(buf) > n:
            yield buf.popleft()
    tail.extend(buf)


def chunks(items: Iterable, size: int = CHUNK_LINES) -> Iterator[list]:
    it = iter(items)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _default_signals() -> None:
    """A worker leaves signals to its parent, which stops the pool (Pool.terminate)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def ordered_map(fn: Callable[[list], list], items: Iterable[list], processes: int) -> Iterator[list]:
    """``fn(item)`` for every item, in order, computed by ``processes`` worker processes with at most
    2 x ``processes`` items under way (memory bounded); in this process when ``processes`` is 1.  ``fn``
    must be a module-level function."""
    if processes <= 1:
        yield from map(fn, items)
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(processes, initializer=_default_signals) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * processes:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    # leaving the ``with`` (normally or by an exception or a signal in the parent) terminates the workers


# ---------------------------------------------------------------- SentencePiece
def workers(n: Optional[int]) -> int:
    """``--workers``: ``n``, or every core this process may use."""
    if n is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n < 1:
        raise CorpusError(f"--workers {n}: must be at least 1")
    return n


def encode_file(model, src, dest, threads: int, chunk: int = CHUNK_LINES) -> int:
    """``src`` encoded into space-separated pieces by the SentencePiece processor ``model``, ``chunk``
    lines at a time on ``threads`` threads (order kept), written to ``dest``; the number of lines."""
    n = 0
    with open(dest, "w", encoding="utf-8", newline="\n") as out:
        for block in chunks(lines(src), chunk):
            pieces = model.encode(block, out_type=str, num_threads=threads)
            out.write("".join(" ".join(p) + "\n" for p in pieces))
            n += len(block)
    return n


def train_sentencepiece(inputs: Sequence, prefix, vocab_size: int, sample: int = 2_000_000, **options) -> object:
    """A unigram SentencePiece model trained on at most ``sample`` sentences of ``inputs`` (a bounded
    sample, whatever the corpus size); the loaded processor."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=[str(p) for p in inputs], model_prefix=str(prefix), vocab_size=vocab_size, character_coverage=1.0,
        model_type="unigram", input_sentence_size=sample, shuffle_input_sentence=True, bos_id=-1, eos_id=-1,
        unk_id=0, pad_id=-1, minloglevel=2, **options)
    return spm.SentencePieceProcessor(model_file=f"{prefix}.model")


def preprocess(args: Sequence[str], threads: int) -> None:
    """The stock ``fairseq-preprocess`` beside this python with ``--workers threads``; an error if it fails."""
    import subprocess
    import sys

    cmd = [str(Path(sys.executable).parent / "fairseq-preprocess"), *args, "--workers", str(threads)]
    if subprocess.run(cmd).returncode != 0:
        raise CorpusError(f"fairseq-preprocess failed: {' '.join(cmd)}")


def subword_and_binarise(out: Path, splits: Sequence[str], vocab_size: int, tests: Sequence[str],
                         threads: int, langs: Tuple[str, str] = ("de", "en")) -> None:
    """The examples' last steps: a joint SentencePiece model trained on ``out/train.tok.{src,tgt}`` (a
    bounded sample), every split's ``{split}.tok.*`` encoded into ``{split}.spm.*`` (``threads`` threads) and
    binarised with a joined dictionary into ``out/bin``: ``tests`` become test, test1, ..."""
    out = Path(out)
    sp = train_sentencepiece([out / f"train.tok.{lang}" for lang in langs], out / "spm", vocab_size)
    for split in splits:
        for lang in langs:
            encode_file(sp, out / f"{split}.tok.{lang}", out / f"{split}.spm.{lang}", threads)
    preprocess(["--source-lang", langs[0], "--target-lang", langs[1], "--trainpref", str(out / "train.spm"),
                "--validpref", str(out / "valid.spm"), "--testpref", ",".join(str(out / f"{t}.spm") for t in tests),
                "--destdir", str(out / "bin"), "--joined-dictionary"], threads)


# ---------------------------------------------------------------- downloads and archives
def reachable(url: str, timeout: float = 5.0) -> Optional[str]:
    """None if ``url``'s host accepts a connection within ``timeout`` s, else why not (one phrase)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as err:
        return f"{parts.hostname}:{port} unreachable ({err.strerror or err.__class__.__name__})"
    return None


def download(url: str, dest, timeout: float = 30.0, attempts: int = 3, log: Callable[[str], None] = print) -> Path:
    """``url`` saved as ``dest`` (returned at once if it exists).  Bytes arrive in ``dest.part``, which a
    broken transfer leaves behind: the next attempt (or call) resumes it with an HTTP ``Range`` request,
    or starts again where the server ignores ranges.  ``dest`` appears only when whole (the size the server
    announced)."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last = "no attempt"
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resumed = have and resp.status == 206 and resp.headers.get("Content-Range", "").startswith(
                    f"bytes {have}-")
                if have and not resumed:
                    log(f"{url}: the server does not resume: downloading again")
                    have = 0
                elif have:
                    log(f"{url}: resuming at byte {have}")
                else:
                    log(f"downloading {url}")
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with open(part, "ab" if have else "wb") as out:
                    while True:
                        try:
                            block = resp.read(1 << 16)
                        except http.client.IncompleteRead as err:
                            out.write(err.partial)  # kept: the next attempt resumes after it
                            raise
                        if not block:
                            break
                        out.write(block)
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # the range starts past the end: the .part is not this file
                part.unlink()
                last = "HTTP 416"
                continue
            raise CorpusError(f"{url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:  # refused, unknown host, cut off
            reason = getattr(err, "reason", None) or err
            last = str(reason) or err.__class__.__name__
            if isinstance(err, urllib.error.URLError) and not part.exists():
                raise CorpusError(f"{url}: cannot download ({last})") from None
            continue
        size = part.stat().st_size
        if total is None or size == total:
            os.replace(part, dest)
            return dest
        last = f"{size} of {total} bytes received"
    raise CorpusError(f"{url}: download incomplete after {attempts} attempts ({last}); rerun to resume ({part})")


def extract(archive, dest, names: Optional[Sequence[str]] = None) -> List[Path]:
    """The regular files of a tar archive (``.tgz``/``.tar.gz``/``.tar``; only ``names`` if given, by base
    name) extracted into ``dest``, flat.  The whole archive is read, so that a truncated or corrupt one
    (gzip CRC, tar header) is reported as one line before any file is used."""
    archive, dest = Path(archive), Path(dest)
    out: Dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r|*") as tar:  # a stream: read once, front to back
            for member in tar:
                base = os.path.basename(member.name)
                if not member.isfile() or (names is not None and base not in names):
                    continue
                f = tar.extractfile(member)
                with open(dest / base, "wb") as target:
                    shutil.copyfileobj(f, target, 1 << 20)
                out[base] = dest / base
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:  # not a local write error
        raise CorpusError(f"{archive}: corrupt or truncated archive ({err or err.__class__.__name__}): "
                          "delete it and rerun to download it again") from None
    missing = [n for n in (names or ()) if n not in out]
    if missing:
        raise CorpusError(f"{archive}: no {', '.join(missing)} inside")
    return list(out.values())


# ---------------------------------------------------------------- Hugging Face
def hf_pairs(name: str, config: str, split: str, src: str, tgt: str, batch: int = 10_000) -> Iterator[Pair]:
    """(src, tgt) of a Hugging Face translation dataset (the hub's WMT layout: a ``translation`` dict per
    row), loaded Arrow-backed (memory-mapped from the datasets cache, so a rerun does not download again)
    and read ``batch`` rows at a time.  ``name`` is a hub name or a local folder in the hub's layout."""
    note = ""
    if not Path(name).is_dir() and not os.environ.get("HF_HUB_OFFLINE"):  # never wait on a dead network
        why = reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
        if why:
            os.environ["HF_HUB_OFFLINE"] = "1"  # read when datasets is imported: the cache only
            note = f" (offline: {why}; the datasets cache was tried)"
    try:
        import datasets
    except ImportError:
        raise CorpusError("the Hugging Face path needs the `datasets` package (bash scripts/install.sh "
                          "installs it)") from None
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # datasets raises many kinds (ConnectionError, FileNotFoundError, ValueError, ...)
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise CorpusError(f"Hugging Face dataset {name} {config} ({split}): {first[:300]}{note}") from None
    if "translation" not in data.column_names:
        raise CorpusError(f"Hugging Face dataset {name} {config}: no `translation` column "
                          f"(columns: {', '.join(data.column_names)})")
    for rows in data.iter(batch_size=batch):
        for row in rows["translation"]:
            if src not in row or tgt not in row:
                raise CorpusError(f"Hugging Face dataset {name} {config}: a row lacks {src} or {tgt} "
                                  f"(has {', '.join(sorted(row))})")
            yield row[src], row[tgt]
