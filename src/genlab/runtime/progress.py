"""Progress of long work in the stage logs: tqdm bars that appear only once the work has taken
a couple of seconds, so that quick steps (the digits' sampling, a progress grid) print nothing."""

from __future__ import annotations

import sys
from collections.abc import Iterable

DELAY_SECONDS = 2.0
_silenced = False


def silence() -> None:
    """No bars from this process from now on (a process beside a stage, whose bars would garble the stage's)."""
    global _silenced
    _silenced = True


class Phases:
    """A bar of a stage's phases, each named on the bar as it ends."""

    def __init__(self, desc: str, total: int) -> None:
        self.bar = bar(desc=desc, total=total, unit="phase")

    def done(self, phase: str) -> None:
        self.bar.set_postfix_str(phase, refresh=False)
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


def bar(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it"):
    """A tqdm bar on stderr (which DVC shows with the stage's output)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, delay=DELAY_SECONDS, mininterval=1.0,
                file=sys.stderr, dynamic_ncols=True, disable=_silenced)
