"""A warm process for the stage commands: the libraries imported once, a fork for every stage.

Each stage process used to spend about 7.5 s importing TensorFlow, Keras, MLflow, pandas, SciPy and
matplotlib before doing any work: 160 s of a 466-s `dvc repro` of the defaults. Now the command DVC
runs, `python -m genlab.stages.<stage> ...`, hands its command line, working directory, environment,
umask and standard streams to a server that has imported those libraries already. The server forks;
the child runs the stage module exactly as `python -m` would, in the command's folder, with the
command's environment, writing to the command's stdout and stderr. genlab's own modules are imported
afresh in every child, so an edit of src/ is what runs; the few that only define things (`SHARED_GENLAB`:
params.py's pydantic schemas, 0.1 s) the server imports too, and a child keeps them while the
command would import the same files, unchanged since the server read them.

For DVC, the command stays the stage's process: it waits for the child, passes SIGINT, SIGTERM and
SIGHUP on to it, and exits with the child's status (or dies of the child's signal). If the command is
killed, the child kills itself at once (it watches the connection), so `kill -9` of a stage command, or
of DVC's whole process group, stops the stage as it did when the command was the stage.

The server lives exactly as long as the command that needed it. Only a stage that DVC runs uses one
(DVC_STAGE is set: a stage run by hand runs in its own process), and the server belongs to that DVC
command (`dvc repro`, `dvc exp run`, `make run`'s DVC, a queue worker): the nearest ancestor of the stage
command that is not a shell, its `owner`. The first stage command of a DVC run finds no server, starts one
explicitly (`python -m genlab.runtime.forkserver <name> <owner>`, in a session of its own) and runs its own
stage itself while the server imports, on the other core; the stages that follow are forks. One that
comes while the server imports is forked between two libraries (TensorFlow, the longest, comes last) and
imports what it still lacks itself: the audit, which needs no TensorFlow, does not wait. The server
watches its owner (a pidfd) and leaves as soon as the owner has ended and its last stage with it, so no
server outlives the command the user typed; another DVC command gets a server of its own (the owner is a
part of the address).

A fork copies only the thread that calls it: a lock held by another thread at that moment stays held in
the child forever. So the server keeps to one thread: it imports its libraries with one BLAS thread
(OPENBLAS_NUM_THREADS=1) and without pyarrow's jemalloc background thread, checks before every fork that
no other thread runs (else the command is told to run its stage in a process of its own), and a child
gives the BLAS libraries the threads a process of its own would have. TensorFlow starts its thread pools
at its first operation, which the server never runs: a child starts as fresh as a new process, and a CPU
training in it gives the same weights bit for bit.

The address is a hash of the owner, the interpreter, its installed libraries, this file's code, the
environment variables that libraries read when they are imported, and the namespaces, root and control
group a fork inherits, so a command in other surroundings gets a server of its own.
`GENLAB_FORKSERVER=0` runs each stage in a process of its own instead.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import NamedTuple

SWITCH_ENV = "GENLAB_FORKSERVER"  # "0": every stage in a process of its own
REPORT_ENV = "GENLAB_STAGE_REPORT"  # a file: the command appends its stage's seconds and peak memory (benchmarks)
START_SECONDS = 120  # how long a command waits for a server it started to answer
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# What the stages import; the SQLAlchemy store is MLflow's SQLite/PostgreSQL client (0.9 s on its own).
PRELOAD = ("numpy", "pandas", "yaml", "pydantic", "tqdm", "filelock", "requests", "scipy.spatial.distance",
           "scipy.stats", "scipy.ndimage", "sklearn.model_selection", "sklearn.datasets", "skimage.morphology",
           "skimage.metrics", "matplotlib.pyplot", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
           "mlflow.tracing.processor.base_mlflow", "git", "great_expectations", "tensorflow", "keras",
           "mlflow.pyfunc")
# genlab's modules that only define things, imported by the server too; a child keeps them while their
# sources are the ones the command would import, as the server read them (otherwise it imports them afresh)
SHARED_GENLAB = ("genlab", "genlab.config", "genlab.config.params", "genlab.runtime", "genlab.runtime.files",
                 "genlab.data", "genlab.data.sources", "genlab.data.splits")
_shared: dict[str, tuple] = {}  # module -> (file, mtime, size) of what the server imported
# Variables a library reads once, when it is imported: a command with other values needs a server of its own.
# (PYTHONPATH is left out: it says where genlab is, and a child imports genlab afresh from the command's path.)
IMPORT_TIME_ENV = ("PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONWARNINGS", "TF_", "KERAS_", "CUDA_",
                   "XLA_", "OMP_", "MKL_", "OPENBLAS_", "GOTO_", "ARROW_", "JE_ARROW_", "MPL", "GX_", "LANG", "LC_",
                   "HOME", "LD_", "TZ",
                   "MLFLOW_LOGGING_LEVEL", "MLFLOW_CONFIGURE_LOGGING", "GENLAB_FORKSERVER_TAG")  # the tag: a server of
# its own on request (the pipeline benchmark's warm side starts from a cold server)
CHILD_ENV = "GENLAB_FORKSERVER_CHILD"  # set in a child until its stage package is imported: run here, do not hand over
# The server's own settings, read by its libraries as they load: no thread but the main one at a fork (a child
# gives the BLAS libraries their usual threads back; the jemalloc background thread only returns freed memory)
SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}
BLAS_THREADS_ENV = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")  # OpenBLAS reads them in turn
SHELLS = ("sh", "dash", "bash", "zsh", "ksh", "mksh", "fish", "busybox")  # DVC runs a stage's command through one


def wanted() -> bool:
    """Whether this stage command goes through a server: a stage DVC runs (DVC_STAGE), on Linux, unless
    GENLAB_FORKSERVER=0, and never in a child."""
    if os.environ.pop(CHILD_ENV, None) is not None:
        return False
    switched_on = os.environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    return sys.platform == "linux" and switched_on and bool(os.environ.get("DVC_STAGE"))


def owner() -> tuple[int, int] | None:
    """The process whose command needs the server, and its start time (a pid can be reused): the nearest
    ancestor of this command that is not a shell (DVC runs a stage's command through one). None if unknown."""
    pid = os.getppid()
    for _ in range(16):
        found = _process(pid)
        if found is None:
            return None
        if found.name not in SHELLS:
            return pid, found.started
        pid = found.parent
    return None


class Process(NamedTuple):
    name: str
    state: str  # "Z": ended, not yet reaped
    parent: int
    started: int  # clock ticks after boot


def _process(pid: int) -> Process | None:
    """A process's name, state, parent and start time, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
    return Process(name, rest[0], int(rest[1]), int(rest[19]))  # fields 3, 4 (ppid) and 22 (starttime)


def address(owned_by: tuple[int, int]) -> str:
    """The server's name, an abstract socket (no file to clean up), for its owner, this interpreter, its
    installed libraries, this file's code and the import-time settings."""
    settings = sorted((key, value) for key, value in os.environ.items() if key.startswith(IMPORT_TIME_ENV))
    libraries = [entry for entry in sys.path if entry.endswith(("site-packages", "dist-packages", ".zip"))
                 or entry.startswith(sys.base_prefix)]
    with open(__file__, "rb") as source:
        code = hashlib.sha256(source.read()).hexdigest()
    key = json.dumps([list(owned_by), sys.executable, _interpreter_flags(), libraries, code, os.getuid(), settings,
                      _surroundings()])
    return "genlab-forkserver-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _interpreter_flags() -> list[str]:
    """The command's interpreter options (-u, -X dev, -W ...), which its server is started with too."""
    return subprocess._args_from_interpreter_flags()  # what multiprocessing passes on to its processes


def _surroundings() -> list[str]:
    """What a fork inherits from the server and not from the command: its mounts and other namespaces (a
    command in `unshare -m` sees its own mounts), its root and its control group (a memory limit)."""
    found = []
    for name in ("ns/mnt", "ns/pid", "ns/user", "ns/uts", "ns/ipc", "ns/cgroup", "root"):
        try:
            found.append(os.readlink(f"/proc/self/{name}"))
        except OSError:
            found.append("")
    try:
        with open("/proc/self/cgroup") as groups:
            found.append(groups.read())
    except OSError:
        found.append("")
    return found


# -- the command's side ------------------------------------------------------------------------------------


def hand_over() -> None:
    """Run this `python -m <module> ...` command in a child of its DVC command's warm server and exit with its
    status. Returns only where there is no server to use (the caller then runs the stage itself)."""
    owned_by = owner()
    try:
        module = sys.orig_argv[sys.orig_argv.index("-m") + 1]
        for fd in (0, 1, 2):  # a closed standard stream cannot be handed over: run here
            os.fstat(fd)
    except (ValueError, IndexError, OSError):
        return
    if owned_by is None:
        return
    request = {"module": module, "argv": sys.argv[1:], "path": sys.path, "cwd": os.getcwd(),
               "env": dict(os.environ), "umask": _umask()}
    started = time.perf_counter()
    connection = _connect_and_send(request, owned_by)
    if isinstance(connection, str):  # the server would not fork (another thread runs in it)
        print(f"genlab: the warm stage server cannot fork safely ({connection}); running this stage in a process "
              f"of its own", file=sys.stderr)
        return
    if connection is STARTED:  # run here while the new server imports: it serves the stages that follow
        atexit.register(lambda: _report({"max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
                                        time.perf_counter() - started))
        return
    if connection is None:
        print("genlab: the warm stage server did not answer; running this stage in a process of its own",
              file=sys.stderr)
        return
    for sig in RELAYED:  # passed on to the child, which stops the way the stage would have stopped
        signal.signal(sig, lambda signum, frame: _send(connection, {"signal": signum}))
    status = _receive(connection)
    if status is None:
        print("genlab: the warm stage server stopped before the stage ended; rerun it (GENLAB_FORKSERVER=0 runs "
              "stages without it)", file=sys.stderr)
        sys.exit(1)
    _report(status, time.perf_counter() - started)
    if "signal" in status:  # die of the same signal, as the stage process would have
        if status["signal"] != signal.SIGKILL:
            signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
        sys.exit(128 + status["signal"])  # a signal whose default is not to end a process
    sys.exit(status["exit"])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STARTED = object()  # _connect_and_send's answer when it found no server and started one


def _connect_and_send(request: dict, owned_by: tuple[int, int]) -> socket.socket | object | str | None:
    """Connect, send the request with our standard streams, and wait for the server to say it forked. Where
    no server listens, start one for the owner and return STARTED: its imports take longer than most stages,
    so this command runs its own stage meanwhile, on the other core, and the stages that follow are forks.
    The server's reason where it would not fork; None if the server was lost three times or answered nothing
    in START_SECONDS."""
    name, lost, deadline = address(owned_by), 0, time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and lost < 3:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            connection.connect("\0" + name)
            socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
            answer = _receive(connection, timeout=START_SECONDS)
            if answer is not None and "pid" in answer:  # the stage runs
                return connection
            if answer is not None:
                connection.close()
                return answer["refused"]
            lost += 1  # the server closed as we came (its owner had ended)
        except ConnectionRefusedError:
            connection.close()
            subprocess.Popen([sys.executable, *_interpreter_flags(), "-m", "genlab.runtime.forkserver", name,
                              *map(str, owned_by)], cwd="/", env=dict(os.environ) | SERVER_ENV,
                             start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return STARTED
        except OSError:
            lost += 1
        connection.close()
        time.sleep(0.05)
    return None


def _report(status: dict, seconds: float) -> None:
    """With GENLAB_STAGE_REPORT set, one JSON line per stage: its name, seconds and peak resident memory."""
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a") as report:
            report.write(json.dumps({"stage": os.environ.get("DVC_STAGE", " ".join(sys.orig_argv[2:])),
                                     "seconds": seconds, "max_rss_mb": status["max_rss_kb"] / 1024}) + "\n")


def _send(connection: socket.socket, message: dict) -> None:
    try:
        connection.send(json.dumps(message).encode())
    except OSError:
        pass


def _receive(connection: socket.socket, timeout: float | None = None) -> dict | None:
    connection.settimeout(timeout)
    try:
        message = connection.recv(4096)
    except (OSError, TimeoutError):
        return None
    return json.loads(message) if message else None


# -- the server's side -------------------------------------------------------------------------------------


def serve(name: str, owned_by: tuple[int, int]) -> int:
    """Listen on `name`, import the libraries, then fork a child per request until the owner has ended and
    the last child with it; then the server exits. In a child, runs the stage and returns its exit status
    (0 in a server that never served: its owner had ended, or another server has the name).

    A request that comes while the libraries are imported is forked between two of them (TensorFlow, the
    longest, last): the stage imports the rest itself, and a stage without TensorFlow (the audit after
    the data's preparation) does not wait for it."""
    watched = Owner(*owned_by)
    if not watched.alive():
        return 0
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        listener.bind("\0" + name)
    except OSError:  # another command started a server at the same moment: that one serves
        return 0
    listener.listen(64)  # requests wait in the backlog while the imports run
    listener.setblocking(False)
    children: dict[int, socket.socket] = {}
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    closed_in_child = (wakeup_read, wakeup_write, *watched.fds())
    for _ in _preload():
        if not watched.alive():
            break
        while select.select([listener], [], [], 0)[0]:  # the requests waiting between two imports
            if (status := _fork_for_request(listener, children, closed_in_child)) is not None:
                return status  # in a child: the stage's exit status
    while True:
        serving = watched.alive()
        if not serving:  # no new stage: the owner has ended; the running ones end with their commands
            listener.close()
            if not children:  # leave at once: the interpreter's teardown of TensorFlow's modules takes seconds
                os._exit(0)
        waiting = [wakeup_read, listener, *watched.fds()] if serving else [wakeup_read]
        ready, _, _ = select.select(waiting, [], [], watched.poll_seconds if serving else 1.0)
        if wakeup_read in ready:
            os.read(wakeup_read, 4096)
        while children:  # the children that ended: their status to their commands
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = children.pop(pid)
            ended = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                     else {"exit": os.waitstatus_to_exitcode(status)})
            _send(connection, ended | {"max_rss_kb": usage.ru_maxrss})
            connection.close()
        if listener in ready:
            if (status := _fork_for_request(listener, children, closed_in_child)) is not None:
                return status


class Owner:
    """The DVC command a server belongs to, watched through a pidfd (or, without one, by polling)."""

    def __init__(self, pid: int, started: int) -> None:
        self.pid, self.started = pid, started
        try:
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # an old kernel, or it has ended already
            self.pidfd = None
        self.poll_seconds = 5.0 if self.pidfd is not None else 0.5

    def fds(self) -> tuple[int, ...]:
        return () if self.pidfd is None else (self.pidfd,)

    def alive(self) -> bool:
        """Whether the owner still runs (the same process: a reused pid has another start time)."""
        if self.pidfd is not None and select.select([self.pidfd], [], [], 0)[0]:
            return False  # a pidfd is readable once its process has ended
        found = _process(self.pid)
        return found is not None and found.started == self.started and found.state != "Z"


def _fork_for_request(listener: socket.socket, children: dict, closed_in_child: tuple[int, int]) -> int | None:
    """Accept a waiting request, check its user and fork: in the child, run the stage and return its exit
    status; in the server, keep the child's connection and return None (also when none was waiting)."""
    try:
        connection, _ = listener.accept()
    except BlockingIOError:  # the command gave up between select and accept
        return None
    try:
        if _peer_uid(connection) != os.getuid():  # only our own user's commands: a fork runs as us
            raise PermissionError("another user's command")
        connection.settimeout(10)
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        connection.settimeout(None)
        request = json.loads(message)
    except (OSError, ValueError):
        connection.close()
        return None
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:  # a lock another thread holds now would stay held in the child forever
        _send(connection, {"refused": f"{threads - 1} other thread(s) run in it"})
        connection.close()
        for fd in fds:
            os.close(fd)
        return None
    pid = os.fork()
    if pid == 0:
        listener.close()
        for fd in closed_in_child:
            os.close(fd)
        return _run_child(request, fds, connection)
    for fd in fds:
        os.close(fd)
    _send(connection, {"pid": pid})
    children[pid] = connection
    return None


def _peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end (SO_PEERCRED: pid, uid, gid)."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


def _preload():
    """Import the libraries the stages use, one at a time (a generator: the server forks for the requests
    waiting between two), then genlab's shared modules."""
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except Exception:
            pass
        if module == "mlflow":
            try:  # the installed distributions' modules (0.7 s), which MLflow maps each time it logs a model
                from mlflow.utils import requirements_utils

                requirements_utils._init_modules_to_packages_map()
            except Exception:
                pass
        yield
    try:
        for module in SHARED_GENLAB:
            importlib.import_module(module)
        _shared.update(_sources(SHARED_GENLAB))
    except Exception:
        _shared.clear()
    yield


def _sources(modules) -> dict[str, tuple]:
    """Each module's source file with its modification time and size, as Python's own cache checks them."""
    found = {}
    for name in modules:
        path = sys.modules[name].__file__
        stat = os.stat(path)
        found[name] = (path, stat.st_mtime_ns, stat.st_size)
    return found


def _kept_genlab(path: list[str]) -> set[str]:
    """The server's shared genlab modules, where the command's `path` finds genlab in the same folder and
    none of their sources changed since the server imported them; otherwise none."""
    import importlib.machinery

    try:
        spec = importlib.machinery.PathFinder.find_spec("genlab", path)
        same_folder = (_shared and spec is not None
                       and list(spec.submodule_search_locations or []) == list(sys.modules["genlab"].__path__))
        return set(_shared) if same_folder and _sources(_shared) == _shared else set()
    except (OSError, KeyError, ImportError):
        return set()


def _run_child(request: dict, fds: list[int], connection: socket.socket) -> int:
    """In the forked child: become the command (streams, folder, environment, arguments) and run its module,
    importing genlab from the command's path."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=stream.isatty())
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"] | {CHILD_ENV: "1"})
    _give_back_blas_threads(request["env"])
    sys.path[:] = request["path"]
    kept = _kept_genlab(request["path"])
    for module in [name for name in sys.modules if name.partition(".")[0] == "genlab" and name not in kept]:
        del sys.modules[module]
        parent, _, child = module.rpartition(".")
        if parent in kept:  # a kept package must not hand out the old module: `from package import child`
            vars(sys.modules[parent]).pop(child, None)
    sys.argv[:] = ["-m", *request["argv"]]
    import numpy

    numpy.random.seed()  # fresh entropy, as a new process has (random reseeds itself after a fork)
    threading.Thread(target=_watch, args=(connection,), name="genlab-forkserver-watch", daemon=True).start()
    import runpy

    try:
        runpy._run_module_as_main(request["module"])  # what `python -m` calls
    except SystemExit as ended:
        return _exit_code(ended.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1
    return 0


def _give_back_blas_threads(env: dict[str, str]) -> None:
    """The server's BLAS libraries run one thread (SERVER_ENV); a stage gets as many as a process of its own
    would start with: the first of OpenBLAS's variables that the command sets, else one per usable core."""
    counts = [env[name].strip() for name in BLAS_THREADS_ENV if env.get(name, "").strip().isdigit()]
    count = int(counts[0]) if counts else len(os.sched_getaffinity(0))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max(1, count), user_api="blas")
    except ImportError:
        pass


def _exit_code(code) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _watch(connection: socket.socket) -> None:
    """The command's signals, raised here; the command gone (killed): die at once, as its process would have."""
    while True:
        message = _receive(connection)
        if message is None:
            os.kill(os.getpid(), signal.SIGKILL)
        if "signal" in message:
            os.kill(os.getpid(), message["signal"])


if __name__ == "__main__":  # python -m genlab.runtime.forkserver <name> <owner's pid> <owner's start time>
    sys.exit(serve(sys.argv[1], (int(sys.argv[2]), int(sys.argv[3]))))
