"""Nothing lost in the workspace: a failed stage leaves its last good outputs in place.

DVC deletes a stage's outputs before it runs the stage's command (all but `persist` ones, and a
persistent output keeps the stage out of DVC's run-cache), so a stage that fails would leave the
workspace without them. dvc.lock still records the outputs of the stage's last successful run, and
their content is still there: a cached output in DVC's cache, a `cache: false` one there too (the
run-cache keeps a copy) or in git. `restore_last_good` puts them back, after moving what the failed
run left in their place to `.genlab/failed/<stage>/`, so that the workspace holds what the user had
and `dvc status` shows only the failed stage as changed.

Two callers: every stage command when it fails under DVC (an error, Ctrl-C, SIGTERM:
genlab.stages.run_stage), and `make run` when `dvc repro` reports a failed stage (a stage killed with
SIGKILL cannot clean up after itself: genlab.runtime.console).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FAILED_DIR = Path(".genlab") / "failed"  # what a failed run left in its outputs' places, per stage


@dataclass(frozen=True)
class LockedOutput:
    """One output of a stage's last successful run, as dvc.lock records it."""

    path: str
    md5: str  # of the file, or of the folder's listing (then it ends in ".dir")
    legacy: bool = False  # a DVC 2 lock entry (no `hash: md5`): the object sits in the legacy cache

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")


@dataclass
class Restoration:
    """What `restore_last_good` did with each of a stage's outputs."""

    stage: str
    restored: list[str] = field(default_factory=list)  # put back from DVC's cache or git
    intact: list[str] = field(default_factory=list)  # already the last good one
    set_aside: dict[str, str] = field(default_factory=dict)  # output -> where the failed run's version went
    lost: dict[str, str] = field(default_factory=dict)  # output -> why it could not be put back

    def describe(self) -> str:
        """A line or two for the console; empty when there was nothing to do."""
        lines = []
        if self.restored:
            lines.append(f"{self.stage}: its last good outputs are back in place ({', '.join(self.restored)}); "
                         f"`dvc status` shows {self.stage} as changed until it runs again")
        lines += [f"{self.stage}: the failed run's {output} is kept in {aside}"
                  for output, aside in self.set_aside.items()]
        lines += [f"{self.stage}: could not put {output} back ({why}); `dvc checkout {self.stage}` or "
                  f"`dvc pull {self.stage}` may" for output, why in self.lost.items()]
        return "\n".join(lines)


def locked_outputs(root: str | Path, stage: str) -> list[LockedOutput]:
    """The outputs dvc.lock records for `stage` (`train@vae`, or `search/dvc.yaml:search` of another pipeline file,
    whose lock file is beside it); none before its first successful run."""
    pipeline, _, name = stage.rpartition(":")
    lock_file = Path(root) / (Path(pipeline).with_name("dvc.lock") if pipeline else "dvc.lock")
    stage = name
    try:
        lock = yaml.safe_load(lock_file.read_text()) or {}
    except FileNotFoundError:
        return []
    entry = (lock.get("stages") or {}).get(stage) or {}
    return [LockedOutput(out["path"], out["md5"], legacy=out.get("hash") != "md5")
            for out in entry.get("outs", []) if out.get("md5")]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Sources:
    """Where the content of a recorded hash is: DVC's cache (its configured folder), else git's HEAD."""

    def __init__(self, root: Path) -> None:
        from dvc.repo import Repo

        self.root = root
        with Repo(str(root)) as repo:
            self.cache = Path(repo.cache.local.path)
            self.legacy_cache = Path(repo.cache.legacy.path)

    def object(self, md5: str, legacy: bool) -> Path | None:
        path = (self.legacy_cache if legacy else self.cache) / md5[:2] / md5[2:]
        return path if path.is_file() else None

    def git_blob(self, path: str, md5: str) -> bytes | None:
        """The file as committed at HEAD, if that is the recorded version (a `cache: false` output)."""
        shown = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=self.root, capture_output=True)
        if shown.returncode == 0 and hashlib.md5(shown.stdout).hexdigest() == md5:
            return shown.stdout
        return None

    def listing(self, output: LockedOutput) -> list[tuple[str, str]]:
        """(relative path, md5) of every file of the output ("" for a file output)."""
        if not output.is_dir:
            return [("", output.md5)]
        manifest = self.object(output.md5, output.legacy)
        if manifest is None:
            raise LookupError(f"the listing {output.md5} is not in DVC's cache")
        return [(entry["relpath"], entry["md5"]) for entry in json.loads(manifest.read_text())]

    def copy(self, output: LockedOutput, relpath: str, md5: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        found = self.object(md5, output.legacy)
        if found is not None:
            shutil.copyfile(found, target)  # a copy: the cache's objects stay read-only and unshared
            return
        blob = None if output.is_dir else self.git_blob(output.path, md5)
        if blob is None:
            raise LookupError(f"{md5} is neither in DVC's cache nor committed at HEAD")
        target.write_bytes(blob)


def _matches(target: Path, listing: list[tuple[str, str]], is_dir: bool) -> bool:
    """Whether `target` already holds exactly the recorded files."""
    if not is_dir:
        return target.is_file() and _md5(target) == listing[0][1]
    if not target.is_dir():
        return False
    present = {str(path.relative_to(target)): path for path in target.rglob("*") if path.is_file()}
    return set(present) == {relpath for relpath, _ in listing} and all(
        _md5(present[relpath]) == md5 for relpath, md5 in listing)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _put_back(sources: _Sources, output: LockedOutput, listing: list[tuple[str, str]], target: Path,
              aside: Path) -> bool:
    """Write the recorded version beside `target`, move what is there to `aside`, rename it into place.
    Returns whether something was set aside."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent))
    try:
        built = staging / "out"
        for relpath, md5 in listing:
            sources.copy(output, relpath, md5, built / relpath if relpath else built)
        if output.is_dir:
            built.mkdir(exist_ok=True)  # an empty folder output
        moved = target.exists() or target.is_symlink()
        if moved:
            _remove(aside)
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(target, aside)  # a rename on the same file system
        os.replace(built, target)
        return moved
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def restore_last_good(root: str | Path, stage: str) -> Restoration:
    """Put back every output of `stage` that does not hold its last good version (per dvc.lock)."""
    root = Path(root).resolve()
    result = Restoration(stage)
    outputs = locked_outputs(root, stage)
    if not outputs:
        return result
    sources = _Sources(root)
    for output in outputs:
        target = root / output.path
        try:
            listing = sources.listing(output)
            if _matches(target, listing, output.is_dir):
                result.intact.append(output.path)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            aside = root / FAILED_DIR / stage / output.path
            if _put_back(sources, output, listing, target, aside):
                result.set_aside[output.path] = str(aside.relative_to(root))
            result.restored.append(output.path)
        except (LookupError, OSError) as error:
            result.lost[output.path] = getattr(error, "strerror", None) or str(error)
    return result


def put_back(root: str | Path, stage: str) -> str:
    """`restore_last_good`, told as the console's lines; a failure to restore is told, never raised, so that
    it cannot hide the stage's own failure."""
    try:
        return restore_last_good(root, stage).describe()
    except Exception as error:
        return f"{stage}: could not put the last good outputs back ({error}); `dvc checkout {stage}` does"
