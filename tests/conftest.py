"""Shared fixtures.  A local Ray takes seconds to start, so the tests that need one share one."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory):
    """The suite never reads or writes the user's own cache (profiles made for this machine): `star
    predict` and every subprocess see an empty cache folder of the session's own."""
    import os

    before = os.environ.get("STAR_CACHE_DIR")
    os.environ["STAR_CACHE_DIR"] = str(tmp_path_factory.mktemp("star-cache"))
    yield
    if before is None:
        os.environ.pop("STAR_CACHE_DIR")
    else:
        os.environ["STAR_CACHE_DIR"] = before
