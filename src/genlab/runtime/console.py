"""A console a person can read: TensorFlow's C++ log lines that are not news kept out of the stage
logs, and one progress bar per training instead of an epoch line each. `GENLAB_VERBOSE=1` (or
`make run VERBOSE=1`) brings back both the per-epoch lines and everything TensorFlow writes."""

from __future__ import annotations

import atexit
import glob
import io
import os
import re
import sys
import threading
from pathlib import Path

VERBOSE_ENV = "GENLAB_VERBOSE"
# What TensorFlow's C++ side writes on every start of a CPU machine, whatever the work: absl's notice,
# oneDNN's, the CPU-features note, the CUDA probe (an "E" line on every machine without a GPU), tf.data's
# notice that a graph attribute is newer than the runtime, and oneDNN's fallback on CPUs without AVX-512.
# Anything else C++ writes still shows.
NOISE = (r"All log messages before absl::InitializeLog", r"oneDNN custom operations are on",
         r"cpu_feature_guard\.cc", r"rebuild TensorFlow with the appropriate compiler flags",
         r"cudart_stub\.cc.*Could not find cuda drivers", r"NodeDef mentions attribute use_unbounded_threadpool",
         r"oneDNN supports DT_INT32 only on platforms with AVX-512")
CUDA_PROBE = r"failed call to cuInit"


def verbose() -> bool:
    """Whether the per-epoch lines and all of TensorFlow's log lines are wanted (GENLAB_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def noise_pattern(gpu_present: bool | None = None) -> re.Pattern:
    """The lines left out; a failed CUDA start is left out only where there is no GPU to start."""
    if gpu_present is None:
        gpu_present = bool(glob.glob("/dev/nvidia[0-9]*"))
    return re.compile("|".join(NOISE + (() if gpu_present else (CUDA_PROBE,))))


class _NativeStderrFilter:
    """File descriptor 2 (where C++ writes) becomes a pipe that a thread copies to the real stderr, line by
    line, leaving out the noise; Python's own sys.stderr writes to the real stderr directly, so warnings,
    tracebacks and progress bars are untouched."""

    def __init__(self, noise: re.Pattern) -> None:
        self.noise = noise
        sys.stderr.flush()
        self.real = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.reader = os.fdopen(read, "rb")
        sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(self.real), "wb", buffering=0), write_through=True,
                                      errors="backslashreplace")
        self.thread = threading.Thread(target=self._copy, name="genlab-stderr-filter", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _copy(self) -> None:
        for line in self.reader:
            if not self.noise.search(line.decode(errors="replace")):
                os.write(self.real, line)

    def close(self) -> None:
        """Let the thread copy what is left (at exit), and give fd 2 back."""
        sys.stderr.flush()
        os.dup2(self.real, 2)  # closes the pipe's last write end: the thread reads to its end
        self.thread.join(timeout=5)


_installed: _NativeStderrFilter | None = None


def quiet_environment() -> None:
    """The settings TensorFlow and MLflow read when they are imported: C++ INFO and WARNING lines off (errors
    still show) and, unless verbose, MLflow's INFO lines (a new store's migrations, "Created version 3 of
    model ..."; the stage prints its own result line; MLflow's warnings and errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not verbose():
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # logging a model copies files


def quiet_native_logs() -> None:
    """Keep TensorFlow's start-up and tf.data notices, and MLflow's INFO lines, out of this process's stderr
    (not when verbose)."""
    global _installed
    quiet_environment()
    if _installed is None and not verbose():
        _installed = _NativeStderrFilter(noise_pattern())


# What `dvc repro` prints around each stage besides the stage's own output: the command (it is in dvc.yaml)
# and the lock update. `make run` leaves them out, and keeps "Running stage ..." and every warning and error.
DVC_ROUTINE = re.compile(r"^(> |(Updating|Generating) lock file |Use `dvc push` to send your updates)|^\s*$")


FAILED_STAGE = re.compile(r"failed to reproduce '([^']+)'")
# DVC's refusals when another DVC command works in this workspace: its repository lock, a stage's paths
LOCKED = re.compile(r"Unable to acquire lock|is busy, it is being blocked by")


def _tee(source, sink, tail: bytearray, limit: int = 1 << 16) -> None:
    """Copy a pipe to `sink` as it comes (progress bars redraw with \\r, not lines), keeping its tail."""
    while chunk := os.read(source.fileno(), 1 << 14):
        sink.write(chunk)
        sink.flush()
        tail += chunk
        del tail[:-limit]


def dvc(argv: list[str]) -> int:
    """Run `dvc <argv>` with its routine lines left out of stdout (not when verbose); return its exit status.
    Its stderr (the stages' progress bars, warnings and errors) is passed through untouched, and read for
    the stage that failed: its last good outputs are put back (genlab.runtime.workspace), which a stage killed with
    SIGKILL could not do itself."""
    import shutil
    import subprocess

    beside = os.path.join(os.path.dirname(sys.executable), "dvc")  # this environment's DVC, then the PATH's
    command = [beside if os.path.exists(beside) else shutil.which("dvc") or "dvc", *argv]
    errors = bytearray()
    with subprocess.Popen(command, stdout=None if verbose() else subprocess.PIPE, stderr=subprocess.PIPE,
                          env=os.environ | {"PYTHONUNBUFFERED": "1"}) as process:
        reader = threading.Thread(target=_tee, args=(process.stderr, sys.stderr.buffer, errors), daemon=True)
        reader.start()
        try:
            for line in process.stdout or ():
                if not DVC_ROUTINE.search(line.decode(errors="replace")):
                    sys.stdout.buffer.write(line)
                    sys.stdout.flush()
            process.wait()
        except KeyboardInterrupt:  # Ctrl-C reaches DVC too, which stops its stage: wait for it
            for line in process.stdout or ():
                sys.stdout.buffer.write(line)
            process.wait()
        reader.join()
    if process.returncode != 0:
        after_failure(errors.decode(errors="replace"))
    return process.returncode


def after_failure(dvc_errors: str) -> None:
    """Say what happened and what to run; put back the last good outputs of the stage that failed."""
    if LOCKED.search(dvc_errors):
        print("genlab: another DVC command holds this workspace's lock (a `dvc repro` or `make run` still "
              "running?); DVC ran and deleted nothing: run it again once that one has finished", file=sys.stderr)
        return
    failed = FAILED_STAGE.findall(dvc_errors)
    if not failed:
        return
    from genlab.runtime import workspace

    stage = failed[-1]
    told = workspace.put_back(".", stage)
    if told:
        print(told, file=sys.stderr)
    print(f"genlab: {stage} failed (the error is above); the workspace holds the last good outputs of every "
          f"stage. Fix the cause and run `make run` again: finished stages are not rerun, and an "
          f"interrupted training resumes from its last saved epoch", file=sys.stderr)


def check_params(path: str = "params.yaml") -> int:
    """params.yaml checked before DVC reads it: genlab's errors name the key and what is allowed, where
    DVC's own (for a model name it cannot use as a stage key) would not; a user's npz file is read once to
    check that every network fits its images, before any stage trains on them."""
    import yaml

    from genlab.config.params import ParamsError, load_params
    from genlab.data.sources import DataError, load_npz

    try:
        params = load_params(path)
        if "priors" not in (yaml.safe_load(Path(path).read_text()) or {}):  # DVC's foreach needs the key itself
            raise ParamsError(f"{path}: no `priors:` section; dvc.yaml's train_prior and evaluate_prior stages run "
                              f"one per entry of it (learned priors over an encoder's codes): add `priors: {{}}` "
                              f"for none")
        if params.data.source == "npz":
            images, _ = load_npz(params.data.path)
            problems = params.image_problems(images.shape[1:], f"{images.shape[1]}x{images.shape[2]} images in "
                                                               f"{params.data.path}")
            if problems:
                raise ParamsError(f"{path}: the networks do not fit the data:\n" +
                                  "\n".join(f"  - {problem}" for problem in problems))
    except (ParamsError, DataError) as error:
        print(f"error ({type(error).__name__}): {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m genlab.runtime.console repro: what `make run` runs
    sys.exit(check_params() or dvc(sys.argv[1:]))
