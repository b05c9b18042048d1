#!/usr/bin/env bash
# Issue 35: Multi30k seeds at the 54-epoch recipe (runs/2026-11-24-cpu-multi30k-54ep), one lane of runs in turn.
#   bash examples/replication/seeds.sh BIN WORK VARIANT:SEED [VARIANT:SEED ...]
# Each run is `MAX_EPOCH=54 PATIENCE=5 THREADS=1 SEED=N multi30k.sh BIN WORK/seedN VARIANT` at nice 19;
# a rerun resumes every unfinished model from its checkpoint_last.pt (a piece stopped mid-epoch loses
# that epoch only).  Start and end of every piece go to WORK/pieces.log (wall time per piece); a model
# finished before (trained, translated, analysed) is skipped with a 'skip' line.
# Two lanes side by side on 2 cores, e.g.
#   bash examples/replication/seeds.sh work/multi30k/bin work/m30k-seeds softmax:2 rela-g:3 &
#   bash examples/replication/seeds.sh work/multi30k/bin work/m30k-seeds rela-g:2 softmax:3 &
set -euo pipefail
BIN=$1; W=$2; shift 2
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$W"
log() { echo "$(date -u +%FT%TZ) $*" >> "$W/pieces.log"; }
for run in "$@"; do
  v=${run%%:*}; s=${run##*:}
  case $s in ''|*[!0-9]*) echo "seeds.sh: error: '$run' is not VARIANT:SEED" >&2; exit 2 ;; esac
  m="$W/seed$s/de-en-$v"
  if [ -f "$m/trained" ] && [ -s "$m/gen-test.txt" ] && [ -f "$m/analysis/stats.json" ]; then
    log "skip $v seed $s (finished before)"; continue
  fi
  log "start $v seed $s (host $(hostname), pid $$)"
  trap 'log "stopped $v seed $s"; exit 143' TERM INT
  if MAX_EPOCH=${MAX_EPOCH:-54} PATIENCE=${PATIENCE:-5} THREADS=1 SEED=$s \
       nice -n 19 bash "$HERE/multi30k.sh" "$BIN" "$W/seed$s" "$v"; then
    log "done $v seed $s"
  else
    rc=$?; log "failed $v seed $s (exit $rc)"; exit $rc
  fi
done
