"""The retrain workflow and the MLflow deployment, checked against the project without Docker or network.

No Docker engine runs on the developers' machines or in CI, so these files are parsed and
cross-checked: every command, target and path the workflow names exists in this project, and
the compose file keeps its ports on 127.0.0.1 and its passwords in .env.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"

PIPELINE_INPUTS = {"params.yaml", "dvc.yaml", "dvc.lock", "data/**", "src/**"}
SERVICES = {"postgres", "minio", "create-bucket", "mlflow"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY")
# ${VAR}, ${VAR:-default}, ${VAR:?error}; not $${VAR}, which compose hands to the container's shell.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
VERSION_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")


# --- helpers, pure so the tests below can also feed them bad input ---------------------------

def makefile_targets(makefile_text: str) -> set[str]:
    """Explicit targets of a Makefile (`name: deps`), not variable assignments (`X := y`)."""
    targets = set()
    for match in re.finditer(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?![:=])",
                             makefile_text, re.MULTILINE):
        targets |= set(match.group(1).split())
    return targets - {".PHONY"}


def make_targets_invoked(script: str) -> set[str]:
    """Targets of every `make ...` at a command position (VAR=value and -flags skipped)."""
    targets = set()
    for match in re.finditer(r"(?:^|[;&|(]|\bthen\b|\bdo\b)\s*make\b([^;&|#\n]*)", script, re.MULTILINE):
        targets |= {arg for arg in match.group(1).split() if "=" not in arg and not arg.startswith("-")}
    return targets


def venv_tools(script: str) -> set[str]:
    return set(re.findall(r"\.venv/bin/([A-Za-z0-9_.-]+)", script))


def bare_project_tools(script: str) -> set[str]:
    """dvc, mlflow or python called without .venv/bin/, which would miss the project's venv."""
    pattern = r"(?:^|[;&|(!]|\bthen\b|\bdo\b|\bif\b)\s*(dvc|mlflow|python3?)(?=\s|$)"
    return set(re.findall(pattern, script, re.MULTILINE))


def resolve(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation of `value` with `env` (as if it were .env)."""
    def substitute(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if operator and operator.endswith("-"):
            return env.get(name) or argument
        if name not in env:
            raise KeyError(f"${{{name}}} is not set")
        return env[name]
    return INTERPOLATION.sub(substitute, value).replace("$$", "$")


def published_host_ips(ports: list, env: dict[str, str]) -> list[str]:
    """The host address of each published port, "" where it binds every interface."""
    addresses = []
    for port in ports:
        if isinstance(port, dict):
            addresses.append(resolve(str(port.get("host_ip", "")), env))
            continue
        parts = resolve(str(port), env).split(":")
        addresses.append(parts[0] if len(parts) == 3 else "")
    return addresses


def literal_passwords(mapping: dict[str, str]) -> list[str]:
    """Keys of secret-looking entries whose value is not a plain ${VAR} (or ${VAR:?...})."""
    plain_reference = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:\?[^}]*)?\}$")
    return [key for key, value in mapping.items()
            if SECRET_NAME.search(key) and not plain_reference.match(str(value))]


def uri_passwords(text: str) -> list[str]:
    """The password part of every scheme://user:password@host in `text`."""
    return re.findall(r"[a-z0-9+]+://[^\s:/@]+:([^\s@]+)@", text)


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def as_text(command) -> str:
    return " ".join(command) if isinstance(command, list) else str(command)


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


@pytest.fixture(scope="module")
def triggers(workflow) -> dict:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    return workflow.get("on", workflow.get(True))


@pytest.fixture(scope="module")
def steps(workflow) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


@pytest.fixture(scope="module")
def scripts(steps) -> list[str]:
    return [step["run"] for step in steps if "run" in step]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def step_running(steps: list[dict], command: str) -> dict:
    matching = [step for step in steps if command in step.get("run", "")]
    assert len(matching) == 1, f"expected one step running {command!r}, found {len(matching)}"
    return matching[0]


def dvc_outputs() -> dict[str, str]:
    """Every out, metric and plot path of dvc.yaml (foreach expanded) -> the stage's cmd."""
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    outputs = {}
    for stage in pipeline["stages"].values():
        if "foreach" in stage:
            source = params[stage["foreach"].strip("${}")]
            keys = list(source) if isinstance(source, (dict, list)) else []
            expanded = [(stage["do"], {"${key}": str(key), "${item}": str(key)}) for key in keys]
        else:
            expanded = [(stage, {})]
        for body, substitutions in expanded:
            for section in ("outs", "metrics", "plots"):
                for entry in body.get(section, []):
                    path = next(iter(entry)) if isinstance(entry, dict) else entry
                    cmd = body["cmd"]
                    for placeholder, value in substitutions.items():
                        path, cmd = path.replace(placeholder, value), cmd.replace(placeholder, value)
                    outputs[path.rstrip("/")] = cmd
    return outputs


# --- the workflow --------------------------------------------------------------------------------

def test_workflow_triggers_on_pipeline_inputs_weekly_and_by_hand(triggers):
    for event in ("push", "pull_request"):
        assert PIPELINE_INPUTS <= set(triggers[event]["paths"]), event
    crons = [entry["cron"] for entry in triggers["schedule"]]
    assert crons and all(len(cron.split()) == 5 for cron in crons)
    assert "workflow_dispatch" in triggers


def test_workflow_checks_out_history_and_sets_up_the_projects_python(steps, pyproject):
    checkout = next(step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0     # dvc metrics diff reads the base revision
    setup = next(step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    version = setup["with"]["python-version"]
    assert isinstance(version, str), "an unquoted 3.10 would be read as 3.1"
    assert Version(version) in SpecifierSet(pyproject["project"]["requires-python"])


def test_workflow_may_comment_on_prs_and_cancels_superseded_runs(workflow):
    job = next(iter(workflow["jobs"].values()))
    permissions = {**(workflow.get("permissions") or {}), **(job.get("permissions") or {})}
    assert permissions == {"contents": "read", "pull-requests": "write"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "github.ref" in workflow["concurrency"]["group"]


def test_workflow_runs_the_readme_commands_and_only_existing_make_targets(scripts):
    invoked = set().union(*(make_targets_invoked(script) for script in scripts))
    assert {"setup", "run"} <= invoked
    assert invoked <= makefile_targets((ROOT / "Makefile").read_text())


def test_workflow_tools_are_console_scripts_the_project_installs(scripts, pyproject):
    project = pyproject["project"]
    requirements = project["dependencies"] + [
        requirement for extra in project.get("optional-dependencies", {}).values() for requirement in extra]
    installed = {"python", "python3", "pip", "pip3"}           # the venv's own
    for requirement in requirements:
        try:
            distribution = importlib.metadata.distribution(Requirement(requirement).name)
        except importlib.metadata.PackageNotFoundError:
            continue
        installed |= {entry.name for entry in distribution.entry_points if entry.group == "console_scripts"}
    used = set().union(*(venv_tools(script) for script in scripts))
    assert {"dvc"} <= used
    assert used <= installed, f"not installed by pyproject.toml: {used - installed}"
    all_scripts = "\n".join(scripts)
    if bare_project_tools(all_scripts):
        assert ".venv/bin" in all_scripts and "GITHUB_PATH" in all_scripts, "bare dvc/mlflow/python miss .venv"


def test_workflow_reads_only_files_the_pipeline_writes_or_git_tracks(steps, scripts):
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@"))
    text = "\n".join(scripts + [upload["with"]["path"]])
    paths = set(re.findall(r"(?<![\w./-])((?:reports|data|models)/[\w./-]*|dvc\.lock)", text))
    assert {"reports/compare/comparison.md", "dvc.lock"} <= {path.rstrip("/") for path in paths}
    outputs = dvc_outputs()
    for path in (path.rstrip("/") for path in paths):
        tracked = subprocess.run(["git", "ls-files", "--", path], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
        if tracked or path in outputs:
            continue
        owner = next((out for out in outputs if path.startswith(out + "/")), None)
        assert owner, f"{path} is neither tracked by git nor an output of dvc.yaml"
        # A file inside an output folder: the stage's module must write that name.
        module = re.search(r"python -m ([\w.]+)", outputs[owner]).group(1)
        source = (ROOT / "src" / Path(*module.split("."))).with_suffix(".py").read_text()
        assert f'"{Path(path).name}"' in source, f"{module} does not write {Path(path).name}"


def test_workflow_actions_are_pinned_to_versions(steps):
    uses = [step["uses"] for step in steps if "uses" in step]
    assert len(uses) >= 4
    assert [ref for ref in uses if not VERSION_PIN.match(ref)] == []


def test_workflow_uses_the_dvc_remote_only_when_configured_and_never_pushes_from_forks(steps):
    assert "dvc remote list" in step_running(steps, "dvc remote list")["run"]
    pull, push = step_running(steps, "dvc pull"), step_running(steps, "dvc push")
    assert "steps.remote.outputs.configured" in pull["if"]
    assert "steps.remote.outputs.configured" in push["if"]
    assert "pull_request" in push["if"] and "head.repo.full_name == github.repository" in push["if"]


def test_workflow_reports_the_metrics_diff_to_the_summary_and_the_pr(steps):
    report = step_running(steps, "dvc metrics diff")
    assert "--md" in report["run"] and "$GITHUB_STEP_SUMMARY" in report["run"]
    assert "origin/$BASE_REF" in report["run"] and report["env"]["BASE_REF"] == "${{ github.base_ref }}"
    comment = next(step for step in steps if step.get("uses", "").startswith("actions/github-script@"))
    assert "github.event_name == 'pull_request'" in comment["if"]


def test_workflow_keeps_secrets_out_of_scripts(steps):
    for step in steps:
        assert "secrets." not in step.get("run", ""), step.get("name")   # only through env:
        secret_vars = [name for name, value in (step.get("env") or {}).items() if "secrets." in str(value)]
        for name in secret_vars:
            assert not re.search(rf"\b(echo|printf)\b[^\n]*\${{?{name}\b", step.get("run", "")), name


# --- the deployment ----------------------------------------------------------------------------

def test_compose_has_the_four_services(compose):
    assert SERVICES <= set(compose["services"])


def test_mlflow_stores_runs_in_postgres_and_serves_artifacts_from_a_created_bucket(compose):
    services = compose["services"]
    command = as_text(services["mlflow"]["command"])
    assert re.search(r"--backend-store-uri postgresql(\+\w+)?://\S+@postgres:5432/", command)
    bucket = re.search(r"--artifacts-destination s3://([\w.-]+)", command).group(1)
    assert "--serve-artifacts" in command and "--host 0.0.0.0" in command
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    created = re.findall(r"\bstore/([\w.-]+)", as_text(services["create-bucket"]["command"]))
    assert {bucket, "dvc"} <= set(created)


def test_mlflow_waits_for_healthy_postgres_and_minio_and_the_buckets(compose):
    services = compose["services"]
    depends_on = services["mlflow"]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["minio"]["condition"] == "service_healthy"
    assert depends_on["create-bucket"]["condition"] == "service_completed_successfully"
    assert services["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "pg_isready" in as_text(services["postgres"]["healthcheck"]["test"])
    for name in ("postgres", "minio", "mlflow"):
        assert services[name]["healthcheck"]["test"], name


def test_mlflow_image_is_pinned_and_matches_the_clients_mlflow(compose, env_example, pyproject):
    build = compose["services"]["mlflow"]["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).read_text()
    default = re.search(r"^ARG MLFLOW_VERSION=(\S+)$", dockerfile, re.MULTILINE).group(1)
    assert re.search(r"^FROM ghcr\.io/mlflow/mlflow:v\$\{MLFLOW_VERSION\}$", dockerfile, re.MULTILINE)
    assert "psycopg2" in dockerfile and "boto3" in dockerfile
    assert env_example["MLFLOW_VERSION"] == default
    client = next(Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("mlflow"))
    assert Version(default) in client.specifier


def test_published_ports_bind_to_localhost(compose, env_example):
    for name, service in compose["services"].items():
        for environment in ({}, env_example):               # compose's defaults, then .env.example's
            addresses = published_host_ips(service.get("ports", []), environment)
            assert all(address == "127.0.0.1" for address in addresses), (name, addresses)
    assert compose["services"]["mlflow"]["ports"] and compose["services"]["minio"]["ports"]


def test_compose_writes_no_password(compose, env_example):
    text = COMPOSE.read_text()
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        assert literal_passwords(environment) == [], name
        for password in uri_passwords(as_text(service.get("command", ""))):
            assert INTERPOLATION.fullmatch(password), (name, password)
    for key, value in env_example.items():
        if re.search(r"PASSWORD|SECRET", key):
            assert value.startswith("change-me"), f"{key}: .env.example holds placeholders only"
            assert value not in text, f"{key}'s example value is written into docker-compose.yml"


def test_env_example_defines_every_variable_compose_requires(env_example):
    required = {name for name, operator, _ in INTERPOLATION.findall(COMPOSE.read_text())
                if not operator.endswith("-")}
    assert required - set(env_example) == set()
    resolve(COMPOSE.read_text(), env_example)    # raises KeyError on a variable .env lacks


def test_deploy_readme_gives_the_dvc_remote_commands_on_a_created_bucket(compose):
    readme = (DEPLOY / "README.md").read_text()
    created = re.findall(r"\bstore/([\w.-]+)", as_text(compose["services"]["create-bucket"]["command"]))
    bucket = re.search(r"dvc remote add -d (\w+) s3://([\w.-]+)/\w+", readme)
    assert bucket and bucket.group(2) in created
    remote = bucket.group(1)
    assert re.search(rf"dvc remote modify {remote} endpointurl http://\S+:9000", readme)
    for option in ("access_key_id", "secret_access_key"):
        assert f"dvc remote modify --local {remote} {option}" in readme
    assert 'pip install -e ".[server]"' in readme  # the extra that brings dvc-s3 and boto3
    server_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    assert any(requirement.startswith("dvc-s3") for requirement in server_extra)
    assert "export MLFLOW_TRACKING_URI=http://" in readme and "docker compose up -d" in readme


# --- the helpers catch what they are meant to catch ---------------------------------------------

def test_helpers_flag_missing_targets_tools_and_bare_commands():
    assert makefile_targets("X := 1\nrun: $(STAMP)\n\tdvc repro\n.PHONY: run\nsetup test:\n") == {
        "run", "setup", "test"}
    assert make_targets_invoked("make setup PYTHON=python3.11\nif ok; then make -s deploy; fi") == {
        "setup", "deploy"}
    assert venv_tools('x="$(.venv/bin/dvc --version)"; .venv/bin/tensorboard') == {"dvc", "tensorboard"}
    assert bare_project_tools("dvc pull\necho dvc\n.venv/bin/dvc push") == {"dvc"}


def test_helpers_flag_exposed_ports_and_literal_passwords():
    assert published_host_ips(["5000:5000", "${BIND:-127.0.0.1}:9000:9000"], {}) == ["", "127.0.0.1"]
    assert published_host_ips(["${BIND:-127.0.0.1}:9000:9000"], {"BIND": "0.0.0.0"}) == ["0.0.0.0"]
    assert published_host_ips([{"target": 5000, "published": 5000}], {}) == [""]
    assert literal_passwords({"POSTGRES_PASSWORD": "hunter2", "AWS_SECRET_ACCESS_KEY": "${S}",
                              "MINIO_ROOT_PASSWORD": "${P:-minio123}"}) == [
        "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"]
    assert uri_passwords("--backend-store-uri postgresql://mlflow:hunter2@postgres:5432/db") == ["hunter2"]
    with pytest.raises(KeyError):
        resolve("${MISSING:?set it}", {})
