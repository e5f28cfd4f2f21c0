"""Atomic outputs: an interrupted write leaves the previous output whole (or none), never half of one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from genlab.runtime.files import atomic_dir, atomic_file, read_json, write_json


def test_an_error_inside_keeps_the_previous_folder_and_file(tmp_path):
    write_json(tmp_path / "metrics.json", {"fid": 1.0})
    with atomic_dir(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "metrics.json") as handle:
            handle.write('{"fid": ')
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "out" / "a.txt").read_text() == "first"
    assert read_json(tmp_path / "metrics.json") == {"fid": 1.0}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json", "out"]  # no staging left


def test_a_killed_writer_leaves_the_previous_output_and_the_next_write_clears_its_leftovers(tmp_path):
    with atomic_dir(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("first")
    writer = textwrap.dedent(f"""
        import time
        from genlab.runtime.files import atomic_dir
        with atomic_dir({str(tmp_path / "out")!r}) as staging:
            (staging / "a.txt").write_text("half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.kill()  # SIGKILL: no cleanup runs
    process.wait()
    assert (tmp_path / "out" / "a.txt").read_text() == "first"
    assert len(list(tmp_path.glob(".out.tmp-*"))) == 1  # the killed writer's staging folder
    with atomic_dir(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("second")
    assert (tmp_path / "out" / "a.txt").read_text() == "second"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
