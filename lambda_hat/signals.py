"""SIGTERM/SIGINT end a job cleanly, whichever launcher runs it and whatever the job is doing.

A signal becomes SystemExit/KeyboardInterrupt in the main thread, so MLflow runs end as KILLED
and temporary files are removed on the way out. Python runs signal handlers only between
bytecodes of the main thread, and a thread inside one long native call (an XLA compilation, a
compiled loop that never returns to Python) does not get there. So a watchdog thread also
learns of the signal (``signal.set_wakeup_fd`` writes it to a socket at C level) and, if the
process is still alive after a grace period, runs the registered clean-ups itself and exits
with 128 + signal: ``kill``/``scancel`` are honoured within seconds, before SLURM's SIGKILL.

Installed around each job by the app's task function (not only by ``main()``): submitit's worker
calls the task function directly and has its own handlers (it ignores SIGTERM), which are put
back after the job. Outside a job (Hydra setting up the next one, the sweep's end) a signal meets
the process's own disposition: SIGINT is Python's KeyboardInterrupt, or nothing at all in a process
started with SIGINT ignored (a background job of a non-interactive shell, ``nohup ... &``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

GRACE_S = 10.0  # time the main thread gets to unwind by itself before the watchdog acts
_cleanups: dict[int, Callable[[], None]] = {}
_lock = threading.Lock()


def on_forced_exit(fn: Callable[[], None]) -> Callable[[], None]:
    """Register fn to run if the watchdog has to end the process; returns the unregister call."""
    with _lock:
        key = id(fn)
        _cleanups[key] = fn
    return lambda: _cleanups.pop(key, None)


_received: list[int] = []  # signals taken by _raise in the current block (see terminate_on_signals)


def _exit_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)


def _raise(signum: int, frame: object) -> None:
    _received.append(signum)
    raise _exit_for(signum)


def _watch(sock: socket.socket, stop: threading.Event, grace_s: float) -> None:
    while not stop.is_set():
        try:
            data = sock.recv(16)
        except OSError:
            return
        if stop.is_set() or not data:
            return
        signum = data[0]
        if signum not in (signal.SIGTERM, signal.SIGINT):
            continue
        if stop.wait(grace_s):  # the job ended by itself
            return
        log.warning("signal %d not handled within %.0fs (a native call is running); ending the job", signum, grace_s)
        with _lock:
            fns = list(_cleanups.values())
        for fn in fns:
            try:
                fn()
            except Exception as e:  # a clean-up must not keep the process alive
                log.warning("clean-up failed: %s", e)
        logging.shutdown()
        os._exit(128 + signum)


@contextlib.contextmanager
def terminate_on_signals(grace_s: float = GRACE_S) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT end the job (see the module docstring); no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    stop = threading.Event()
    for s in previous:
        signal.signal(s, _raise)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(reader, stop, grace_s), name="signal-watchdog", daemon=True)
    watchdog.start()
    _received.clear()
    try:
        yield
    finally:
        stop.set()
        signal.set_wakeup_fd(old_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        writer.close()  # wakes the watchdog's recv
        reader.close()
    # Reached only when the block ended without an exception although a signal came: Python
    # swallows an exception raised where it runs a callback (a gc callback such as jax's, a
    # __del__: "Exception ignored in ..."), and the signal would be lost. Raise it now.
    if _received:
        signum = _received[0]
        log.warning("signal %d arrived where Python ignores exceptions (a gc callback or __del__); ending the job now", signum)
        raise _exit_for(signum)
