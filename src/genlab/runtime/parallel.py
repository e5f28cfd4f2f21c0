"""Work beside a stage's own: a function run in a forked process, on the machine's other core.

A stage's networks are small and dispatch-bound: each stage keeps about one core of two busy (1.0-1.2
cores measured on the 2-core machine). `evaluate@<model>` restores test images (genlab.evaluation.restoration) with
nothing from its sample-quality measures, so it runs them in a second process meanwhile.

The process is a fork, so it starts with the stage's imports and arrays at no cost, and it must be forked
before the stage runs its first TensorFlow operation: TensorFlow's thread pools, started then, do not
survive a fork. What it needs of TensorFlow (a model, the judge) it loads itself. It draws no progress
bars (they would garble the stage's), dies with the stage even when the stage is killed (SIGKILL
included), and its error is raised in the stage when the stage asks for the result.

Only where it pays and is safe: on Linux with two cores or more and no GPU (a second process would take
a GPU's memory again). Elsewhere the function runs in the stage itself, when the stage asks for the result.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL: seen without starting TensorFlow


def worthwhile() -> bool:
    """Whether a process beside the stage pays here: Linux, two cores or more for this process, no GPU."""
    return (sys.platform == "linux" and len(os.sched_getaffinity(0)) >= 2
            and not any(os.path.exists(device) for device in GPU_DEVICES))


class Beside:
    """A function running in a forked process; `result()` waits for its return value or raises its error.
    Where a second process does not pay (`worthwhile`), `result()` calls the function here instead."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self._process = None
        if not worthwhile():
            self._later = function, args
            return
        context = multiprocessing.get_context("fork")
        self._receiving, sending = context.Pipe(duplex=False)
        self._process = context.Process(target=_run, args=(sending, os.getpid(), function, args), daemon=True,
                                        name=f"genlab: {getattr(function, '__name__', 'work')}")
        self._process.start()
        sending.close()

    def result(self) -> Any:
        if self._process is None:
            function, args = self._later
            return function(*args)
        try:
            outcome, value = self._receiving.recv()
        except EOFError:  # it died without a word: killed (out of memory?) or crashed
            self._process.join()
            raise RuntimeError(f"the process beside the stage ({self._process.name}) ended with exit code "
                               f"{self._process.exitcode} before returning its result") from None
        finally:
            self._receiving.close()
        self._process.join()
        if outcome == "error":
            raise value
        return value

    def cancel(self) -> None:
        """Stop it (the stage failed or was interrupted before it asked for the result)."""
        if self._process is None:
            return
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._receiving.close()

    def __enter__(self) -> Beside:
        return self

    def __exit__(self, *exc_info) -> None:
        self.cancel()  # nothing to do once result() has returned


def die_with_parent(signum: int = signal.SIGKILL, parent: int | None = None) -> None:
    """This process gets `signum` when its parent dies (Linux; a `preexec_fn` of a command started by a stage
    keeps it across the exec): no process outlives the command a user typed."""
    if sys.platform != "linux":
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if parent is not None and os.getppid() != parent:  # the parent died between the fork and the prctl
        os._exit(1)


def _run(sending, parent: int, function: Callable[..., Any], args: tuple) -> None:
    die_with_parent(signal.SIGKILL, parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stage handles Ctrl-C and SIGTERM and then stops this
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from genlab.runtime import progress

    progress.silence()
    try:
        sending.send(("value", function(*args)))
    except BaseException as error:
        error.add_note("in the process beside the stage:\n" + "".join(traceback.format_tb(error.__traceback__)))
        try:
            sending.send(("error", error))
        except Exception:
            sending.send(("error", RuntimeError("".join(traceback.format_exception(error)))))
    finally:
        sending.close()
