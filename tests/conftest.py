import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items):
    """`make test` runs the suite on two workers (pytest-xdist, `--dist loadgroup`). A module's tests stay
    together on one worker, in order (several build on the previous test's state, and share module fixtures);
    the modules that use the session's `project` are one group, so it is built once."""
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None) and item._fixtureinfo.name2fixturedefs.get("project")
        shared = bool(definitions) and definitions[-1].scope == "session"
        group = "project" if shared else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


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
