"""One thin command per DVC stage: parse arguments, load params, call the library, write outputs, log.

`run_stage` turns the errors a user can cause (bad params, bad data, a failed
expectation, a diverging loss, an unreachable tracking server) into one clear
line on stderr and a non-zero exit, instead of a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

from genlab import console

# `python -m genlab.stages.<stage>` imports this package before the stage's module, and so before TensorFlow,
# while sys.argv[0] is still "-m": TensorFlow's start-up lines out of the stage's log (GENLAB_VERBOSE=1: in).
# A process that imports the stages as a library (pytest, a notebook) keeps its stderr as it is.
if sys.argv[:1] in (["-m"], ["-c"]):
    console.quiet_native_logs()

EXIT_USER_ERROR = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from genlab.data import DataError
    from genlab.params import ParamsError
    from genlab.tracking import TrackingUnavailable

    errors: list[type[BaseException]] = [ParamsError, DataError, TrackingUnavailable]
    if "genlab.validate" in sys.modules:
        errors.append(sys.modules["genlab.validate"].ValidationFailed)
    if "genlab.training" in sys.modules:
        errors.append(sys.modules["genlab.training"].TrainingDiverged)
    return tuple(errors)


class Terminated(KeyboardInterrupt):
    """SIGTERM: stop like Ctrl-C, so that the MLflow run is marked KILLED and no output is renamed into place."""


def _terminate(signum, frame) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def run_stage(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main; a user error prints `error: ...` and exits with status 2; SIGTERM or Ctrl-C
    stop it cleanly (a training keeps its last completed epoch for the rerun to resume from)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main(argv)
    except KeyboardInterrupt as error:
        print(f"interrupted ({error or 'Ctrl-C'}): nothing was written; a training resumes from its last "
              f"completed epoch when the stage runs again (dvc repro)", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT))
    except Exception as error:
        if not isinstance(error, _user_errors()):
            raise
        name = type(error).__name__
        print(f"error ({name}): {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def argument_parser(description: str | None, reads_prepared_data: bool = True) -> argparse.ArgumentParser:
    """The options every stage shares: the params file and, for all but `prepare`, the prepared splits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="the parameters file")
    if reads_prepared_data:
        parser.add_argument("--data", required=True, help="folder of the prepared splits")
    return parser
