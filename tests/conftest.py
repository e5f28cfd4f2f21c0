import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# the modules whose tests use the session's `project` (one `dvc repro` of the tiny project, several tests building
# on the state the one before left): one worker runs them, in order, and builds the project once
SHARED_PROJECT = ("test_pipeline_e2e", "test_reproducibility", "test_sweeps", "test_ui_browser")


def pytest_collection_modifyitems(items):
    """The modules of SHARED_PROJECT run first, so that the longest unit of work starts at once; a module that
    uses the shared project and is not listed there is an error, not a second project built on another worker."""
    def shares_project(item) -> bool:
        definitions = item._fixtureinfo.name2fixturedefs.get("project")
        return bool(definitions) and definitions[-1].scope == "session"

    unlisted = {item.module.__name__ for item in items if shares_project(item)} - set(SHARED_PROJECT)
    if unlisted:
        raise pytest.UsageError(f"{sorted(unlisted)} use the session's `project`: add them to SHARED_PROJECT")
    items.sort(key=lambda item: item.module.__name__ not in SHARED_PROJECT)  # stable: in order within each


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook, there when it is installed
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs the suite on two pytest-xdist workers. Each module is one unit of work, its tests on one
    worker in their order (several build on the previous test's state, and share module fixtures), and the
    modules of SHARED_PROJECT are one unit. (pytest-xdist's own `--dist loadgroup` renames a test's node id to
    group it, which pytest 9.2's node ids no longer allow: every test became a unit of its own.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "project" if module.rsplit("/", 1)[-1].removesuffix(".py") in SHARED_PROJECT else module

    return ByModule(config, log)


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
