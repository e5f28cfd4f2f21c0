"""genlab.runtime.parallel: work beside a stage, in a forked process: its value or its error comes back, it draws
no progress bars, and it never outlives the stage (a failure, Ctrl-C, SIGKILL). And `genlab.stages.leave`:
a stage command ends without the interpreter's teardown, with everything it wrote in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from genlab.config.params import ParamsError
from genlab.runtime import parallel, progress


def square_and_pid(value: int) -> tuple[int, int, bool]:
    return value * value, os.getpid(), progress.bar(range(1), desc="hidden").disable


def fail_with_a_user_error() -> None:
    raise ParamsError("restore.tasks: no such task")


def die_at_once() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep_then_write(path: str) -> None:
    time.sleep(30)
    Path(path).write_text("outlived the stage")


forked = pytest.mark.skipif(not parallel.worthwhile(), reason="a second process does not pay here (one core, a GPU)")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


@forked
def test_the_value_comes_back_from_another_process_that_draws_no_bars():
    value, pid, bars_off = parallel.Beside(square_and_pid, 7).result()
    assert value == 49 and pid != os.getpid() and bars_off
    assert not progress.bar(range(1), desc="here").disable  # the stage still draws its own


def test_where_a_second_process_does_not_pay_the_stage_runs_it_itself(monkeypatch):
    monkeypatch.setattr(parallel, "worthwhile", lambda: False)  # one core, a GPU, not Linux
    with parallel.Beside(square_and_pid, 3) as beside:
        value, pid, _ = beside.result()
    assert value == 9 and pid == os.getpid()


@forked
def test_its_error_is_raised_in_the_stage_with_its_type_and_where_it_happened():
    with pytest.raises(ParamsError, match="restore.tasks: no such task") as raised:
        parallel.Beside(fail_with_a_user_error).result()
    assert any("fail_with_a_user_error" in note for note in raised.value.__notes__)


@forked
def test_a_process_that_dies_without_a_word_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="ended with exit code -9"):
        parallel.Beside(die_at_once).result()


@forked
def test_leaving_the_block_early_stops_it(tmp_path):
    written = tmp_path / "written"
    with pytest.raises(KeyError):
        with parallel.Beside(sleep_then_write, str(written)) as beside:
            worker = beside._process.pid
            raise KeyError("the stage failed first")
    assert not alive(worker) and not written.exists()


@forked
def test_it_dies_with_the_stage_even_when_the_stage_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from genlab.runtime import parallel
        from test_parallel import sleep_then_write
        beside = parallel.Beside(sleep_then_write, {str(tmp_path / "written")!r})
        print(beside._process.pid, flush=True)
        time.sleep(60)
    """)
    stage = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(stage.stdout.readline())
    assert alive(worker)
    stage.kill()
    stage.wait()
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


STAGE = textwrap.dedent("""
    import sys, threading, time
    from pathlib import Path
    from genlab.runtime.stage import run_stage

    class Teardown:
        def __del__(self, marker=str(Path(sys.argv[1]) / "teardown"), write=open):
            with write(marker, "w") as file:  # in the interpreter's teardown of the module: a stage command skips it
                file.write("ran")

    KEPT = Teardown()

    def main(argv):
        out = Path(sys.argv[1])
        def late():
            time.sleep(0.5)
            out.joinpath("thread").write_text("joined")
        threading.Thread(target=late).start()  # not a daemon: the interpreter would wait for it
        print("the stage's last line", end="")  # no newline: still in the buffer
        sys.stderr.write("and on stderr")
        if sys.argv[2] != "0":
            sys.exit(int(sys.argv[2]))

    if __name__ == "__main__":
        run_stage(main)
""")


@pytest.mark.parametrize("status", [0, 2])
def test_a_stage_command_leaves_with_its_status_its_streams_flushed_and_its_threads_done(tmp_path, status):
    package = tmp_path / "code" / "genlab_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import genlab.stages\n")  # as genlab/stages/<stage>.py's package is
    (package / "stage.py").write_text(STAGE)
    source = str(Path(parallel.__file__).resolve().parents[1])
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path / "code"), source]), "GENLAB_FORKSERVER": "0"}
    done = subprocess.run([sys.executable, "-m", "genlab_probe.stage", str(tmp_path), str(status)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == status
    assert done.stdout == "the stage's last line" and done.stderr.endswith("and on stderr")
    assert (tmp_path / "thread").read_text() == "joined"
    assert not (tmp_path / "teardown").exists()
    # the same run as a script, not a stage command: the interpreter's own exit, teardown included
    done = subprocess.run([sys.executable, str(package / "stage.py"), str(tmp_path), str(status)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == status and (tmp_path / "teardown").read_text() == "ran"
