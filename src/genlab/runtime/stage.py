"""What every stage command shares: its start, its clear errors, its exit.

`begin_command` runs first in a `python -m genlab.stages.<stage>` command (genlab.stages imports
it before the stage's own module, and so before TensorFlow): the libraries' start-up lines out of
the log, and the stage handed to a warm server's fork where there is one (genlab.runtime.forkserver).
`run_stage` turns the errors a user can cause (bad params, bad data, a failed expectation, a diverging
loss, an unreachable tracking server) into one clear line on stderr and a non-zero exit, instead of a
traceback.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from genlab.runtime import console, forkserver

_as_command = False  # a stage command's process (or its fork), which ends with the stage


def begin_command(as_module: bool) -> None:
    """The start of a stage command (`python -m`, or `python -c` in tests): TensorFlow's start-up lines out of
    its log (GENLAB_VERBOSE=1: in), and, for `python -m`, the stage handed to a warm server's fork where
    there is one (this command then waits for it and exits with its status). A process that imports the
    stages as a library (pytest, a notebook) does not call it and keeps its stderr as it is."""
    global _as_command
    console.quiet_environment()
    if as_module and forkserver.wanted():
        forkserver.hand_over()  # returns where the stage runs in this process
    console.quiet_native_logs()
    _as_command = as_module


EXIT_USER_ERROR = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from genlab.config.params import ParamsError
    from genlab.data.sources import DataError
    from genlab.tracking import TrackingUnavailable

    errors: list[type[BaseException]] = [ParamsError, DataError, TrackingUnavailable]
    if "genlab.data.validate" in sys.modules:
        errors.append(sys.modules["genlab.data.validate"].ValidationFailed)
    if "genlab.training.fit" in sys.modules:
        errors.append(sys.modules["genlab.training.fit"].TrainingDiverged)
    return tuple(errors)


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C, so that the MLflow run is marked KILLED and no output is renamed into place."""


def _terminate(signum, frame) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main; a user error prints `error: ...` and exits with status 2; SIGTERM or Ctrl-C
    stop it cleanly (a training keeps its last completed epoch for the rerun to resume from). Whatever
    the failure, a stage run by DVC puts its last good outputs back in place (genlab.runtime.workspace). A stage
    command then leaves at once (`leave`); a bug's traceback takes the interpreter's own way out."""
    try:
        _run_stage(main, argv)
    except SystemExit as ending:
        if not _as_command:
            raise
        leave(ending.code)
    if _as_command:
        leave(0)


def leave(code: int | str | None) -> NoReturn:
    """Exit as the interpreter does (it waits for non-daemon threads, runs the exit handlers, flushes the
    streams) but without its teardown of every module, which takes 2.3 s in a stage that has used
    TensorFlow (measured: a fork of the warm server ending 2.3 s after its last line), for a process that
    ends anyway. Its files are closed by then: the stages write through `with` blocks and atomic renames."""
    threading._shutdown()
    atexit._run_exitfuncs()
    if isinstance(code, str):  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def _run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None) -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main(argv)
    except KeyboardInterrupt as error:
        print(f"interrupted ({error or 'Ctrl-C'}): nothing new was written; a training resumes from its last "
              f"completed epoch when the stage runs again (dvc repro)", file=sys.stderr)
        put_back_last_good()
        sys.exit(128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT))
    except SystemExit as error:  # argparse's usage errors
        if error.code not in (0, None):
            put_back_last_good()
        raise
    except Exception as error:
        message = _user_message(error)
        if message is None:  # a bug: its traceback, after the outputs are back
            put_back_last_good()
            raise
        print(message, file=sys.stderr)
        put_back_last_good()
        sys.exit(EXIT_USER_ERROR)


# what a full disk, a read-only folder or a quota says when a stage writes its outputs
_NOT_WRITABLE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


def _user_message(error: Exception) -> str | None:
    """The one line a user error gets, or None for anything else."""
    if isinstance(error, OSError) and error.errno in _NOT_WRITABLE:
        where = error.filename or f"the outputs of {os.environ.get('DVC_STAGE', 'this stage')}"
        return f"error (OSError): cannot write {where}: {error.strerror}; nothing half-written was kept"
    if isinstance(error, _user_errors()):
        return f"error ({type(error).__name__}): {error}"
    return None


def put_back_last_good() -> None:
    """Under DVC (which deleted this stage's outputs before running it), put the last good ones back."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:  # run by hand: nothing was deleted, and the atomic writes kept what was there
        return
    from genlab.runtime import workspace

    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        told = workspace.put_back(os.environ.get("DVC_ROOT", "."), stage)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if told:
        print(told, file=sys.stderr)


def argument_parser(description: str | None, reads_prepared_data: bool = True) -> argparse.ArgumentParser:
    """The options every stage shares: the params file and, for all but `prepare`, the prepared splits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="the parameters file")
    if reads_prepared_data:
        parser.add_argument("--data", required=True, help="folder of the prepared splits")
    return parser
