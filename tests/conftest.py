"""Shared fixtures.  A local Ray takes seconds to start, so the tests that need one share one."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def short_prefill_window():
    """Whole-model prefills are timed over 0.3 s, not 2 s (measure.prefill_timed_s), and units over
    their `reps` calls only, not 0.1 s (measure.unit_timed_s): the suite's profiles and samples check
    what is computed from measurements, and the longer windows, which only make figures repeat better
    on a busy host, would add minutes to the suite."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAR_PREFILL_TIMED_S", "0.3")
        patch.setenv("STAR_DECODE_TIMED_S", "0.3")
        patch.setenv("STAR_UNIT_TIMED_S", "0")
        yield


@pytest.fixture(scope="session", autouse=True)
def own_cache_folder(tmp_path_factory):
    """The suite never reads or writes the user's own cache (profiles made for this machine): `star
    predict` and every subprocess see an empty cache folder of the session's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STAR_CACHE_DIR", str(tmp_path_factory.mktemp("star-cache")))
        yield
