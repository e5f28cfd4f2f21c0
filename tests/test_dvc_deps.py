"""dvc.yaml's dependencies are exact: every stage lists the genlab modules its command imports (the runtime
plumbing aside: how a stage runs, not what it computes), and nothing it does not import.

DVC's cache is only as correct as these lists: a module a stage imports but does not list lets an edit of it
go unnoticed (an old model evaluated with new code); a module listed but not imported reruns the stage for
nothing. The imports are read from the sources (every `import` and `from ... import`, in functions too),
transitively; a stage of one model also imports its own family's file, which the registry imports by name.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
SRC = PROJECT / "src"
PLUMBING = ("genlab.runtime", "genlab.stages")  # the package genlab.stages itself: the command's start
DYNAMIC = {"genlab.models.registry": "genlab.models.{family}"}  # imported by name: the model's own family


def module_file(name: str) -> Path | None:
    base = SRC / name.replace(".", "/")
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def is_plumbing(name: str) -> bool:
    return name in PLUMBING or name.startswith("genlab.runtime.")


@cache
def direct_imports(name: str) -> frozenset[str]:
    """The genlab modules a module imports anywhere in its source (but under `if TYPE_CHECKING:`), with their
    packages."""
    found = set()
    tree = ast.parse(module_file(name).read_text())
    for block in [node for node in ast.walk(tree)
                  if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]:
        block.body = []  # imports for type hints only: never run
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "genlab"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "genlab":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names
                      if module_file(f"{node.module}.{alias.name}") is not None}
    return frozenset(".".join(module.split(".")[:depth]) for module in found
                     for depth in range(1, module.count(".") + 2))


# A prior over codes (`priors:`): the registry builds it by genlab.models.latent, with the prior's family and
# the encoder's, which is any family with codes (known only from the encoder's folder).
ENCODER_FAMILIES = ("autoencoder", "ppca", "vae")


def families_of(definition: dict, item: dict | None) -> list[str]:
    """The families whose files a stage of one model imports by name: its own, or a prior's."""
    if item is None:
        return []
    if "${priors}" in definition["foreach"]:
        return ["latent", item["family"], *ENCODER_FAMILIES]
    return [item["family"]]


def imported(command_module: str, families: list[str] | str | None) -> set[str]:
    """Every genlab module that running `command_module` imports, not following the plumbing's imports."""
    families = [families] if isinstance(families, str) else families or []
    seen: set[str] = set()
    todo = [command_module, *(".".join(command_module.split(".")[:depth]) for depth in range(1, 3))]
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        if is_plumbing(name):
            continue
        todo += direct_imports(name)
        if name in DYNAMIC:
            todo += [DYNAMIC[name].format(family=family) for family in families]
    return seen


def computes(name: str) -> bool:
    """Whether a module holds code that can change a stage's outputs: not plumbing, not a docstring alone."""
    body = ast.parse(module_file(name).read_text()).body
    has_code = any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)
    return has_code and not is_plumbing(name)


# The search (search/dvc.yaml) trains whichever model params.yaml names, of any family: it lists every family's file.
ANY_FAMILY = ("autoencoder", "diffusion", "flow", "gan", "ppca", "vae")


def stages() -> dict[str, tuple[str, str | None, set[str]]]:
    """Every stage as DVC resolves dvc.yaml (and the search's search/dvc.yaml) with params.yaml: its command's
    module, its model's family (for a stage of one model; every family for the search) and the genlab source
    files it lists."""
    pipeline = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    searching = yaml.safe_load((PROJECT / "search" / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    found = {stage: (re.search(r"python -m (\S+)", definition["cmd"]).group(1), list(ANY_FAMILY),
                     {dep for dep in definition["deps"] if dep.startswith("src/")})
             for stage, definition in searching.items()}
    for stage, definition in pipeline.items():
        entries = re.fullmatch(r"\$\{(\w+)\}", definition.get("foreach", "${none}")).group(1)
        items = params[entries].items() if "foreach" in definition else [(None, None)]
        for key, item in items:
            body = definition["do"] if key is not None else definition

            def resolve(text: str, key=key, item=item) -> str:
                return re.sub(r"\$\{(key|item\.(\w+))\}",
                              lambda m: key if m.group(1) == "key" else str(item[m.group(2)]), text)

            module = re.search(r"python -m (\S+)", body["cmd"]).group(1)
            listed = {resolve(dep) for dep in body.get("deps", []) if resolve(dep).startswith("src/")}
            found[stage if key is None else f"{stage}@{key}"] = (module, families_of(definition, item), listed)
    return found


STAGES = stages()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_lists_exactly_the_genlab_modules_it_imports(stage):
    module, families, listed = STAGES[stage]
    required = {str(module_file(name).relative_to(PROJECT)) for name in imported(module, families) if computes(name)}
    assert not {path for path in listed if (PROJECT / path).is_dir()}, "list files, not folders: a folder reruns " \
                                                                        "the stage for every file in it"
    assert required - listed == set(), f"{stage} imports these but does not list them in dvc.yaml"
    assert listed - required == set(), f"{stage} lists these in dvc.yaml but does not import them"


def test_a_stage_of_one_model_depends_on_its_own_family_only():
    """A model's stages list its family's file and no other family's; a prior's, the prior's family and the
    families with codes (its encoder is one of them)."""
    families = {path.stem for path in (SRC / "genlab/models").glob("*.py")} & {
        family for item in STAGES.values() for family in item[1]}
    for stage, (_, own, listed) in STAGES.items():
        if not own:
            continue
        others = {f"src/genlab/models/{other}.py" for other in families - set(own)}
        assert {f"src/genlab/models/{family}.py" for family in own} <= listed and not listed & others, stage


def test_the_import_reader_follows_functions_and_the_registry():
    """Known answers: the train stage imports TensorFlow's code inside main, and the VAE's stage the VAE's file."""
    found = imported("genlab.stages.train", "vae")
    assert {"genlab.training.fit", "genlab.models.registry", "genlab.models.vae", "genlab.models.networks"} <= found
    assert "genlab.models.gan" not in found and "genlab.runtime.stage" in found  # plumbing: seen, not followed
    assert "genlab.runtime.forkserver" not in found
    assert not computes("genlab.models") and computes("genlab.tracking") and not computes("genlab.runtime.files")
