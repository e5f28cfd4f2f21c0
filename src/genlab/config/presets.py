"""Switch params.yaml to a ready configuration from configs/ (`make run CONFIG=configs/mnist_sample.yaml`).

The configuration is validated first (genlab.config.params), then copied over params.yaml, which DVC
reads. A params.yaml that holds edits of the user's own (it matches neither the committed
params.yaml nor any file in configs/) is never overwritten: the command stops and says how to
keep the edits. `git checkout params.yaml` returns to the committed defaults.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from genlab.config.params import ParamsError, load_params
from genlab.runtime.files import atomic_file


def committed(path: Path) -> str | None:
    """The file as the last commit has it, or None outside git (or when it is not committed)."""
    try:
        found = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent, capture_output=True,
                               text=True, check=False)
    except OSError:
        return None
    return found.stdout if found.returncode == 0 else None


def use(config: Path, params: Path = Path("params.yaml")) -> bool:
    """Make `params` a copy of `config`; True if it changed. Raises ParamsError for an invalid config or
    when `params` holds edits that are in no configuration and not committed."""
    if not config.is_file():
        raise ParamsError(f"{config}: no such configuration; the ready ones are "
                          f"{sorted(str(path) for path in Path('configs').glob('*.yaml'))}")
    load_params(config)  # an invalid configuration never replaces a valid params.yaml
    wanted = config.read_text()
    current = params.read_text() if params.is_file() else None
    if current == wanted:
        return False
    known = {committed(params)} | {path.read_text() for path in config.parent.glob("*.yaml")}
    if current is not None and current not in known:
        raise ParamsError(f"{params} has edits of your own that are in no configuration and not committed; "
                          f"keep them first (git commit, or git stash), or copy {config} by hand")
    with atomic_file(params, "w") as handle:
        handle.write(wanted)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a ready configuration, e.g. configs/mnist_sample.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the file DVC reads")
    args = parser.parse_args(argv)
    try:
        changed = use(args.config, args.params)
    except ParamsError as error:
        print(f"error (ParamsError): {error}", file=sys.stderr)
        sys.exit(2)
    if changed:
        print(f"{args.params} is now {args.config} (git checkout {args.params} returns to the committed defaults)")


if __name__ == "__main__":
    main()
