"""genlab.runtime.forkserver: a stage command run in a fork of the warm server behaves as its own process would,
for DVC and for the person at the terminal: streams, folder, arguments, environment, umask, exit status,
tracebacks, and the signals (SIGINT, SIGTERM passed on; SIGKILL of the command kills the stage too); the
server forks only with no other thread running, and leaves with the command that needed it.

The commands are `python -m probe_stages.probe ...`, a package made here with the same two-line hand-over
as genlab.stages, so that the server is the real one (the first test waits for its imports). They run as DVC
runs a stage (DVC_STAGE set), with this test process as their owner."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from genlab.runtime import forkserver

PROBE = '''
import json, os, signal, sys, time
from pathlib import Path

out = Path(os.environ["PROBE_OUT"])
mode = sys.argv[1]
shared = "genlab.config.params" in sys.modules  # kept from the server's imports, not imported by this stage
import genlab.config.params
from threadpoolctl import threadpool_info
facts = {"params": [shared, getattr(genlab.config.params, "MARK", None), genlab.config.params.__file__],
         "pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "argv": sys.argv, "umask": os.umask(0o022),
         "x": os.environ.get("PROBE_X"), "keras_loaded": "keras" in sys.modules, "version": VERSION,
         "blas_threads": [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]}
(out / "facts.json").write_text(json.dumps(facts))
print("to stdout", flush=True)
print("to stderr", file=sys.stderr, flush=True)
if mode == "exit":
    sys.exit(int(sys.argv[2]))
if mode == "bug":
    raise RuntimeError("a bug in the stage")
if mode == "sleep":
    signal.signal(signal.SIGTERM, lambda *_: (out.joinpath("got").write_text("SIGTERM"), sys.exit(143)))
    try:
        (out / "ready").write_text("")
        time.sleep(60)
    except KeyboardInterrupt:
        out.joinpath("got").write_text("SIGINT")
        sys.exit(130)
'''


@pytest.fixture
def probe(tmp_path):
    """A package of probe commands and the environment that runs them; call it with the probe's arguments."""
    package = tmp_path / "code" / "probe_stages"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent('''
        import sys
        from genlab.runtime import forkserver
        if sys.argv[:1] == ["-m"] and forkserver.wanted():
            forkserver.hand_over()
        '''))
    (package / "probe.py").write_text("VERSION = 1\n" + PROBE)
    out = tmp_path / "out"
    out.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    source = str(Path(forkserver.__file__).resolve().parents[2])
    env = {key: value for key, value in os.environ.items()
           if key not in (forkserver.SWITCH_ENV, *forkserver.BLAS_THREADS_ENV)}
    env |= {"PYTHONPATH": os.pathsep.join([str(tmp_path / "code"), source]), "PROBE_OUT": str(out),
            "PROBE_X": "from the command", "DVC_STAGE": "probe"}

    def start(*args: str, extra: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "probe_stages.probe", *args], cwd=work, env=env | (extra or {}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: os.umask(0o027))

    start.out, start.work, start.package, start.env = out, work, package, env
    start("exit", "0").communicate(timeout=300)  # where no server runs yet, this one starts it: the rest are forks
    deadline = time.monotonic() + 300
    while not json.loads((out / "facts.json").read_text())["keras_loaded"]:  # forked before its imports ended
        assert time.monotonic() < deadline, "the server never finished its imports"
        start("exit", "0").communicate(timeout=300)
    return start


def facts(probe) -> dict:
    return json.loads((probe.out / "facts.json").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return bool(stat) and stat.split()[2] != "Z"


def wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_the_stage_runs_in_a_fork_of_the_warm_server_as_the_command_itself_would(probe):
    command = probe("exit", "3", "--flag")
    stdout, stderr = command.communicate(timeout=300)
    found = facts(probe)
    assert command.returncode == 3
    assert stdout == "to stdout\n" and "to stderr" in stderr
    assert found["pid"] != command.pid and found["ppid"] != command.pid  # a child of the server, not of the command
    assert found["keras_loaded"]  # the server had imported it: the stage did not pay for it
    assert found["cwd"] == str(probe.work)
    assert found["argv"][1:] == ["exit", "3", "--flag"] and found["argv"][0].endswith("probe.py")  # as `python -m`
    assert found["x"] == "from the command" and found["umask"] == 0o027
    server = found["ppid"]
    second = probe("exit", "0")
    second.communicate(timeout=60)
    assert second.returncode == 0 and facts(probe)["ppid"] == server  # one server serves them all


def test_a_command_that_finds_no_server_starts_one_and_runs_its_own_stage_meanwhile(probe):
    cold = {"GENLAB_FORKSERVER_TAG": f"cold-{os.getpid()}-{time.time()}"}  # a server of its own, not started yet
    first = probe("exit", "4", extra=cold)
    stdout, _ = first.communicate(timeout=120)
    found = facts(probe)
    assert first.returncode == 4 and stdout == "to stdout\n"
    assert found["pid"] == first.pid and not found["keras_loaded"]  # the command itself, while the server imports
    second = probe("exit", "0", extra=cold)
    second.communicate(timeout=300)
    found = facts(probe)
    assert second.returncode == 0 and found["pid"] != second.pid  # a fork of that server,
    assert not found["keras_loaded"]  # made between two of its imports (TensorFlow last): it did not wait for them
    server = found["ppid"]
    deadline = time.monotonic() + 300
    while not found["keras_loaded"]:  # the stages after the imports have TensorFlow from the server
        assert time.monotonic() < deadline, "the server never finished its imports"
        probe("exit", "0", extra=cold).communicate(timeout=300)
        found = facts(probe)
        assert found["ppid"] == server
    os.kill(server, signal.SIGTERM)  # not left idling for the rest of the suite


def test_every_child_imports_the_stage_code_afresh(probe):
    probe("exit", "0").communicate(timeout=300)
    assert facts(probe)["version"] == 1
    (probe.package / "probe.py").write_text("VERSION = 2\n" + PROBE)
    probe("exit", "0").communicate(timeout=60)
    assert facts(probe)["version"] == 2


def test_a_child_keeps_the_server_s_genlab_definitions_until_their_sources_change(probe, tmp_path):
    copy = tmp_path / "copy"  # a genlab of its own, for a server of its own
    shutil.copytree(Path(forkserver.__file__).parents[1], copy / "genlab", ignore=shutil.ignore_patterns("__pycache__"))
    own = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "code"), str(copy)]),
           "GENLAB_FORKSERVER_TAG": f"shared-{os.getpid()}-{time.time()}"}
    probe("exit", "0", extra=own).communicate(timeout=120)  # starts that server, and runs here meanwhile
    deadline = time.monotonic() + 300
    while not facts(probe)["params"][0]:  # genlab's modules come after the libraries
        assert time.monotonic() < deadline, "no child ever had the server's genlab.config.params"
        probe("exit", "0", extra=own).communicate(timeout=300)
    found = facts(probe)
    server = found["ppid"]
    assert found["params"] == [True, None, str(copy / "genlab" / "config" / "params.py")]  # the server's
    params = copy / "genlab" / "config" / "params.py"
    params.write_text(params.read_text() + "\nMARK = 2\n")
    probe("exit", "0", extra=own).communicate(timeout=60)
    found = facts(probe)
    assert found["ppid"] == server and found["params"] == [False, 2, str(params)]  # the edit is what runs
    probe("exit", "0", extra={"GENLAB_FORKSERVER_TAG": own["GENLAB_FORKSERVER_TAG"]}).communicate(timeout=60)
    found = facts(probe)  # the same server, for a command that finds genlab in another folder: that one's
    assert found["ppid"] == server and found["params"][0] is False and "copy" not in found["params"][2]
    os.kill(server, signal.SIGTERM)


def test_a_bug_prints_its_traceback_and_exits_1(probe):
    command = probe("bug")
    _, stderr = command.communicate(timeout=300)
    assert command.returncode == 1
    assert "Traceback" in stderr and "RuntimeError: a bug in the stage" in stderr


@pytest.mark.parametrize("sig, told, status", [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "SIGINT", 130)])
def test_sigterm_and_ctrl_c_reach_the_stage_and_its_status_comes_back(probe, sig, told, status):
    command = probe("sleep")
    wait_for(probe.out / "ready")
    command.send_signal(sig)
    command.communicate(timeout=60)
    assert (probe.out / "got").read_text() == told  # the stage's own handler ran: it could clean up
    assert command.returncode == status


def test_a_stage_dies_with_its_command_when_the_command_is_killed(probe):
    """`kill -9` of the command (as the OOM killer, or a test killing DVC's process group, would) leaves no
    stage running on its own in the server."""
    command = probe("sleep")
    wait_for(probe.out / "ready")
    child = facts(probe)["pid"]
    command.kill()
    command.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "the stage outlived its killed command"
        time.sleep(0.05)


def test_a_stage_killed_by_a_signal_kills_its_command_with_the_same_signal(probe):
    command = probe("sleep")
    wait_for(probe.out / "ready")
    os.kill(facts(probe)["pid"], signal.SIGKILL)  # the stage itself, say by the kernel's OOM killer
    command.communicate(timeout=60)
    assert command.returncode == -signal.SIGKILL  # DVC sees what it would have seen


def test_the_report_has_the_stage_s_peak_memory(probe, tmp_path):
    report = tmp_path / "report.jsonl"
    probe("exit", "0", extra={forkserver.REPORT_ENV: str(report), "DVC_STAGE": "probe@x"}).communicate(timeout=300)
    line = json.loads(report.read_text())
    assert line["stage"] == "probe@x" and line["seconds"] > 0
    assert line["max_rss_mb"] > 100  # it counts the libraries the fork shares with the server


@pytest.mark.parametrize("extra", [{forkserver.SWITCH_ENV: "0"}, {"DVC_STAGE": ""}])
def test_genlab_forkserver_0_or_a_stage_not_run_by_dvc_runs_in_the_command_s_own_process(probe, extra):
    command = probe("exit", "0", extra=extra)
    command.communicate(timeout=300)
    found = facts(probe)
    assert command.returncode == 0 and found["pid"] == command.pid and not found["keras_loaded"]


def test_the_server_runs_one_thread_and_a_stage_gets_the_blas_threads_of_a_process_of_its_own(probe):
    """No other thread runs in the server when it forks (a lock held by one would stay held in the child);
    its BLAS libraries run one thread, and a child has as many as a fresh process."""
    probe("exit", "0").communicate(timeout=300)
    found = facts(probe)
    server = found["ppid"]
    assert server != os.getpid() and len(os.listdir(f"/proc/{server}/task")) == 1
    cores = len(os.sched_getaffinity(0))
    assert found["blas_threads"] and all(count == cores for count in found["blas_threads"])
    own = {"OPENBLAS_NUM_THREADS": "1"}  # the command's own setting (a server of its own: it is read at import)
    deadline = time.monotonic() + 300
    while probe("exit", "0", extra=own).communicate(timeout=300) and facts(probe)["ppid"] == os.getpid():
        assert time.monotonic() < deadline, "no command was ever forked by the server it started"
    assert facts(probe)["blas_threads"] and all(count == 1 for count in facts(probe)["blas_threads"])
    os.kill(facts(probe)["ppid"], signal.SIGTERM)


def test_a_server_with_another_thread_refuses_to_fork_and_the_command_runs_its_stage_itself(tmp_path):
    """The precondition, on the server's own function: with a second thread running, a request is answered
    with the reason and nothing is forked."""
    import socket
    import threading

    name = f"genlab-forkserver-test-{os.getpid()}-{time.time()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + name)
    listener.listen(1)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        command = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command.connect("\0" + name)
        socket.send_fds(command, [json.dumps({"module": "x"}).encode()], [0, 1, 2])
        children = {}
        assert forkserver._fork_for_request(listener, children, ()) is None and children == {}
        answer = json.loads(command.recv(4096))
        assert "thread" in answer["refused"]
    finally:
        stop.set()
        listener.close()


def test_the_server_leaves_with_the_command_that_needed_it(probe, tmp_path):
    """An owner (a stand-in for `dvc repro`) runs stage commands until one is forked by the server it
    started; once the owner has ended, the server is gone within 5 seconds."""
    owner = textwrap.dedent(f'''
        import json, os, subprocess, sys, time
        from pathlib import Path
        facts = Path({str(probe.out / "facts.json")!r})
        for _ in range(600):
            subprocess.run([sys.executable, "-m", "probe_stages.probe", "exit", "0"], cwd={str(probe.work)!r},
                           check=True)
            found = json.loads(facts.read_text())
            if found["ppid"] != os.getpid():  # forked by the server, not run by the command itself
                print(found["ppid"], flush=True)
                break
            time.sleep(0.2)
        ''')
    done = subprocess.run([sys.executable, "-c", owner], env=probe.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    server = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 5
    while alive(server):
        assert time.monotonic() < deadline, "the server outlived its owner by more than 5 s"
        time.sleep(0.05)


SYSTEM_PYTHON = Path("/usr/bin/python3")  # one that another user may run (the venv's may sit under /root)


@pytest.mark.skipif(os.getuid() != 0 or not SYSTEM_PYTHON.exists(), reason="needs root to act as another user")
def test_another_user_s_request_is_refused(probe):
    """A fork runs as the server's user: a request from another user's process (the abstract socket is
    reachable by any local user) is closed unanswered, and nothing runs."""
    probe("exit", "0").communicate(timeout=300)  # the server is up
    (probe.out / "facts.json").unlink()
    env = probe.env
    owned_by = (os.getpid(), forkserver._process(os.getpid()).started)  # the probe commands' owner: this process
    name = subprocess.run([sys.executable, "-c", f"from genlab.runtime import forkserver; "
                                                 f"print(forkserver.address({owned_by!r}))"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    request = {"module": "probe_stages.probe", "argv": ["exit", "0"], "path": [str(probe.package.parent)],
               "cwd": "/", "env": {"PROBE_OUT": str(probe.out)}, "umask": 0o022}
    intruder = textwrap.dedent(f'''
        import json, socket
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        connection.connect("\\0" + {name!r})
        connection.settimeout(30)
        try:
            socket.send_fds(connection, [json.dumps({request!r}).encode()], [0, 1, 2])
            print("answered" if connection.recv(4096) else "closed")
        except (ConnectionResetError, BrokenPipeError):
            print("closed")
        ''')
    done = subprocess.run([str(SYSTEM_PYTHON), "-c", intruder], capture_output=True, text=True, timeout=60, cwd="/",
                          preexec_fn=lambda: os.setuid(65534))
    assert done.stdout.strip() == "closed", done.stderr  # no {"pid": ...}
    time.sleep(1)
    assert not (probe.out / "facts.json").exists()
