"""Console scripts (``fairseq-rela-*``)."""
import signal
import sys


def run_quietly_on_signals(main, *args):
    """``main(*args)``; SIGTERM and Ctrl-C end it through ``SystemExit`` (so ``finally`` blocks and staging
    clean-ups run as on any failure) with status 128 + the signal's number and no traceback."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return main(*args)
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)
