"""Is a rerun of a seed the same training? Compare two ``fairseq-train`` logs line by line, timings aside.

For each logged line of the chosen epochs (``train_inner`` every ``--log-interval`` updates, ``valid``, the
``train`` line closing the epoch), the values that do not measure time (loss, nll_loss, ppl, wpb, bsz,
num_updates, lr, gnorm, ...; not wps, ups, train_wall, wall, gb_free) must be equal as logged (fairseq
rounds to 3-4 digits). A line logged again after a resume counts as its last occurrence. Exit 0: both
logs have the same lines and every value agrees ("identical"); 1: a value differs ("differ"), or the values
agree but one log has lines the other lacks, e.g. a rerun still training ("agree so far"); 2: bad input.

    python examples/replication/compare_logs.py examples/replication/runs/2026-11-24-cpu-multi30k-54ep/de-en-softmax/train.log \\
        work/m30k-seed1-check/seed1/de-en-softmax/train.log --epochs 1
"""
import argparse
import re
import sys
from pathlib import Path

PROG = "compare_logs.py"
TIMING = {"wps", "ups", "train_wall", "wall", "gb_free"}
_KV = re.compile(r"(\w+)[=\s]([-\d.e+]+|nan|inf)(?=[,|\s]|$)")
_EPOCH = re.compile(r"epoch (\d+)")


def logged_lines(text: str, epochs) -> dict:
    """``{(kind, epoch, num_updates): {field: value as logged}}`` of the chosen epochs, timings left out."""
    out = {}
    for line in text.split("\n"):
        for kind, tag in (("train_inner", "| train_inner |"), ("valid", "| valid |"), ("train", "| train |")):
            if tag in line:
                body = line.split(tag, 1)[1]
                m = _EPOCH.search(body)
                if not m or int(m.group(1)) not in epochs:
                    break
                fields = {k: v for k, v in _KV.findall(body.split(":", 1)[-1] if kind == "train_inner" else body)
                          if k not in TIMING and k != "epoch"}
                if "num_updates" in fields:
                    out[(kind, int(m.group(1)), int(float(fields["num_updates"])))] = fields
                break
    return out


def compare(a: dict, b: dict):
    """Lines only one log has, and ``(line, field, value a, value b)`` for every differing value."""
    only = sorted(set(a) ^ set(b))
    diffs = [(key, f, a[key].get(f), b[key].get(f)) for key in sorted(set(a) & set(b))
             for f in sorted(set(a[key]) | set(b[key])) if a[key].get(f) != b[key].get(f)]
    return only, diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--epochs", type=int, nargs="+", default=[1], help="the epochs to compare (default 1)")
    args = p.parse_args(argv)
    logs = []
    for path in (args.first, args.second):
        if not path.is_file():
            sys.exit(f"{PROG}: error: {path}: no such file")
        lines = logged_lines(path.read_text(encoding="utf-8", errors="replace"), set(args.epochs))
        if not lines:
            sys.exit(f"{PROG}: error: {path}: no logged line of epoch {' '.join(map(str, args.epochs))}")
        logs.append(lines)
    only, diffs = compare(*logs)
    for key in sorted(set(logs[0]) & set(logs[1])):
        shown = " ".join(f"{k}={v}" for k, v in logs[0][key].items())
        print(f"{key[0]:<11} epoch {key[1]} update {key[2]:>5}: {'same' if not any(d[0] == key for d in diffs) else 'DIFFERS'}  {shown}")
    for key in only:
        print(f"{key[0]:<11} epoch {key[1]} update {key[2]:>5}: only in {args.first if key in logs[0] else args.second}")
    for key, f, x, y in diffs:
        print(f"{key[0]} update {key[2]}: {f} {x} vs {y}")
    verdict = "differ" if diffs else f"agree so far ({len(only)} lines in one log only)" if only else "identical"
    print(f"{len(set(logs[0]) & set(logs[1]))} lines in both, {len(only)} in one only, {len(diffs)} values differ: {verdict}")
    return 0 if verdict == "identical" else 1


if __name__ == "__main__":
    sys.exit(main())
