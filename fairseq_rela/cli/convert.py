"""``fairseq-rela-convert``: a Hugging Face BERT/RoBERTa folder as a fairseq checkpoint the analysis loads.

    fairseq-rela-convert --hf all-MiniLM-L6-v2/ --out minilm/ [--text sentences.en[.gz] [--subset test]]
    fairseq-rela-analyze minilm --user-dir fairseq_rela --task masked_lm --path minilm/checkpoint.pt \\
        --gen-subset test --output-dir analysis/ --cpu

writes ``OUT/checkpoint.pt`` (a stock fairseq ``roberta`` masked-LM checkpoint; with ``--user-dir`` our
tools load it as :class:`~fairseq_rela.models.rela_roberta.RelaRobertaModel` with softmax attention, computing
the HF model's function), ``OUT/dict.txt``, ``OUT/convert.json`` (what was converted: the weights' SHA-256,
the MLM head or the encoder alone, the tensors left out) and, with ``--text``, the lines tokenised by the
model's own tokenizer (``OUT/SUBSET.tokens``, as it writes the tokens) and binarised for ``--task masked_lm``
(``OUT/SUBSET.bin``/``.idx``).  The logic is :mod:`fairseq_rela.models.huggingface`; this is the command line.
Everything is written into ``.OUT.incomplete-*`` beside ``OUT`` and moved into place at the end; bad input is
one ``error:`` line before any file is written.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile

from fairseq_rela.cli import run_quietly_on_signals

PROG = "fairseq-rela-convert"
OUTPUT_NAME = re.compile(r"checkpoint\.pt|dict\.txt|convert\.json|\w+\.(tokens|bin|idx)")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Convert a Hugging Face BertModel, BertForMaskedLM, "
                                "RobertaModel or RobertaForMaskedLM folder into a fairseq checkpoint for the analysis.")
    p.add_argument("--hf", required=True, metavar="DIR", help="the Hugging Face folder (config.json, "
                   "model.safetensors or pytorch_model.bin, tokenizer.json or vocab.txt / vocab.json + merges.txt)")
    p.add_argument("--out", required=True, metavar="OUT", help="folder to write (replaced as a whole if it holds "
                   "only an earlier conversion)")
    p.add_argument("--text", metavar="FILE", help="raw text, one sentence a line (.gz or plain UTF-8): tokenised "
                   "with the model's tokenizer and binarised as OUT/SUBSET for --task masked_lm")
    p.add_argument("--subset", default="test", help="name of the binarised --text split (default: test)")
    p.add_argument("--max-lines", type=int, metavar="N", help="read only the first N lines of --text")
    return p


def _fail(message: str):
    sys.exit(f"{PROG}: error: {message}")


def _stage(out_dir: str) -> str:
    out = os.path.realpath(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        _fail(f"--out {out_dir}: exists and is not a folder")
    if os.path.isdir(out):
        other = sorted(n for n in os.listdir(out) if not OUTPUT_NAME.fullmatch(n))
        if other:
            _fail(f"--out {out_dir}: holds files that are not {PROG} outputs ({other[0]!r}); the folder is replaced "
                  "as a whole: choose a new or empty folder")
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        return tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.incomplete-")
    except OSError as err:
        _fail(f"--out {out_dir}: cannot write there ({err.strerror or err})")


def _publish(staging: str, out_dir: str) -> None:
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staging, 0o777 & ~mask)
    out = os.path.realpath(out_dir)
    if os.path.isdir(out):
        old = staging.replace(".incomplete-", ".old-")
        os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old)
    else:
        os.rename(staging, out)


def _read_text(args):
    from fairseq_rela.corpus import CorpusError, lines

    if args.max_lines is not None and args.max_lines < 1:
        _fail("--max-lines must be >= 1")
    if not re.fullmatch(r"\w+", args.subset):
        _fail(f"--subset {args.subset!r}: a split name (letters, digits, _)")
    if not os.path.isfile(args.text):
        _fail(f"--text {args.text}: no such file")
    text = []
    try:
        for n, line in enumerate(lines(args.text), 1):
            if args.max_lines is not None and n > args.max_lines:
                break
            if not line.strip():
                _fail(f"--text {args.text}:{n}: an empty line (one sentence a line; remove empty lines)")
            text.append(line)
    except (CorpusError, OSError) as err:
        _fail(f"--text {args.text}: {err}")
    if not text:
        _fail(f"--text {args.text}: no lines")
    return text


def _binarise(conv, text, prefix: str) -> dict:
    """``OUT/SUBSET.{tokens,bin,idx}``: the lines as the model's tokenizer writes them and as fairseq's
    mmap dataset (ids + ``</s>``; the masked-LM data prepends ``<s>``), with a few counts."""
    import torch
    from fairseq.data import indexed_dataset

    ids = conv.encode(text)
    symbols = ["<s>", "<pad>", "</s>", "<unk>", *conv.symbols, "<mask>"]
    with open(prefix + ".tokens", "w", encoding="utf-8", newline="\n") as f:
        for row in ids:
            f.write(" ".join(symbols[i] for i in row.tolist()) + "\n")
    builder = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=len(symbols))
    eos = torch.tensor([2])
    for row in ids:
        builder.add_item(torch.cat([row, eos]).to(torch.int32))
    builder.finalize(prefix + ".idx")
    lengths = [len(r) + 2 for r in ids]  # with <s> and </s>
    limit = conv.args.max_positions
    return {"sentences": len(ids), "tokens": sum(lengths), "longest": max(lengths),
            "unknown": int(sum(int((r == 3).sum()) for r in ids)),
            "longer_than_model": sum(n > limit for n in lengths)}


def main(args) -> dict:
    text = _read_text(args) if args.text else None
    hf_dir = args.hf
    import torch  # noqa: F401  (after the cheap checks)
    from fairseq_rela.models.huggingface import HFConversionError, convert, read_folder

    if not os.path.isdir(hf_dir):
        _fail(f"--hf {hf_dir}: not a folder")
    staging = _stage(args.out)  # the output is checked before the weights are read
    try:
        try:
            hf = read_folder(hf_dir)
            conv = convert(hf, data=os.path.realpath(args.out))
        except HFConversionError as err:
            _fail(str(err))
        state = conv.checkpoint()
        with open(os.path.join(staging, "checkpoint.pt"), "wb") as f:
            torch.save(state, f)
        with open(os.path.join(staging, "dict.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write(conv.dictionary_text())
        report = {"hf": os.path.realpath(hf_dir), "architecture": hf.architecture, "description": conv.description,
                  "weights_file": hf.weights_file, "weights_sha256": hf.weights_sha256,
                  "tokenizer_file": hf.tokenizer_file, "mlm_head": conv.mlm_head, "ignored_tensors": conv.ignored,
                  "layer_norm_eps": conv.args.layer_norm_eps, "activation_fn": conv.args.activation_fn,
                  "max_positions": conv.args.max_positions, "dictionary_size": len(conv.symbols) + 5}
        if text is not None:
            report["text"] = {"file": os.path.realpath(args.text), "subset": args.subset,
                              **_binarise(conv, text, os.path.join(staging, args.subset))}
        with open(os.path.join(staging, "convert.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        _publish(staging, args.out)
    except OSError as err:
        _fail(f"--out {args.out}: cannot write ({err.strerror or err})")
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    print(f"{PROG}: {hf_dir} -> {os.path.join(args.out, 'checkpoint.pt')}: {conv.description}")
    if conv.ignored:
        print(f"{PROG}: left out (not part of the function analysed): {', '.join(conv.ignored)}")
    if text is not None:
        t = report["text"]
        print(f"{PROG}: {t['sentences']} sentences of {args.text} -> {os.path.join(args.out, args.subset)} "
              f"({t['tokens']} tokens with [CLS]/[SEP], longest {t['longest']}, {t['unknown']} unknown; "
              f"{t['longer_than_model']} longer than the model's {conv.args.max_positions} positions)")
    return report


def cli_main(argv=None) -> None:
    import logging

    logging.basicConfig(format="%(levelname)s | %(name)s | %(message)s", level=logging.WARNING, force=True)
    args = get_parser().parse_args(argv)
    run_quietly_on_signals(main, args)  # the staging folder is removed as on any failure


if __name__ == "__main__":
    cli_main()
