import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """A real `dvc repro` of the tiny project in a temporary git repository, shared by the end-to-end,
    browser and sweep tests (which only add experiments to it)."""
    import sandbox
    from pipeline_project import PROJECT, tiny_params

    root = sandbox.copy_project(PROJECT, tmp_path_factory.mktemp("genlab"), tiny_params())
    first = sandbox.run(["dvc", "repro"], root)
    sandbox.commit(root, "first repro")
    commit = sandbox.run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    return root, {"first": first.stdout, "commit": commit}
