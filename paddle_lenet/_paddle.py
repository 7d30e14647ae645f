"""``import paddle`` without its import-time noise and without its signal handlers; every module of the package
imports paddle after this.

Paddle's import prints "No ccache found" (a UserWarning) and installs an "always" warning filter in front
of any the caller set, so ``warnings.filterwarnings`` cannot silence it; recording the import's warnings
does, and restores the filters afterwards. Paddle's import also installs C-level handlers for SIGTERM (and
others) that abort with a C++ banner and exit −15, replacing whatever the host program had set: the Python
handlers of SIGINT and SIGTERM in force before the import are put back, so importing this package leaves
the host's signal handling as it was (and its warning filters: the import's own warnings are recorded and
dropped inside ``catch_warnings``). Importing paddle only here, lazily, also keeps a config error a
sub-second answer (paddle's import takes ~2 s).
"""

import os
import signal
import threading
import warnings

os.environ.setdefault("GLOG_minloglevel", "2")
_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_main = threading.current_thread() is threading.main_thread()
_before = {s: signal.getsignal(s) for s in _SIGNALS}
# SIGINT/SIGTERM are held back while paddle imports (its C-level handlers would kill the process silently with
# −15) and delivered once the previous handlers are back: a signal in the first seconds reaches the host's handler
_held = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if _main else None
try:
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")  # also under PYTHONWARNINGS=error: paddle's import warnings are not errors
        import paddle  # noqa: F401
finally:
    if _main:
        for _sig, _handler in _before.items():
            if _handler is not None:
                signal.signal(_sig, _handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, _held)
