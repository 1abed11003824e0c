"""`GradientLogger` under `keras.distribution.DataParallel` on JAX, with 2 host devices.

JAX fixes its devices when it starts (`XLA_FLAGS=--xla_force_host_platform_device_count=2`
before it is imported), which this pytest process has done with one, so the checks run once, in
a process of their own (`tests/backends/data_parallel_checks.py`, bounded by `TIMEOUT_S`), and
each test here reports one of them. Skipped unless `KERAS_BACKEND=jax`.
"""

import os
import sys

import keras
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: check_runner

import check_runner  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution on JAX: run with KERAS_BACKEND=jax")

#: Seconds the checks' process may take (about 50 s alone on 2 CPU cores).
TIMEOUT_S = 300

CHECKS = [
    "reduced_gradient_equals_the_twins_float32",
    "reduced_gradient_equals_the_twins_float64",
    "global_clipnorm_clips_the_reduced_gradient",
    "every_feature_with_streaming_and_steps_per_execution",
    "per_replica_is_refused_by_name",
    "logged_fit_trains_as_an_unlogged_fit",
]


@pytest.fixture(scope="module")
def data_parallel_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("data_parallel") / "results.json"
    return check_runner.run_script(os.path.join(HERE, "data_parallel_checks.py"), out, CHECKS, TIMEOUT_S)


@pytest.mark.parametrize("check", CHECKS)
def test_data_parallel_on_two_host_devices(check, data_parallel_results):
    check_runner.assert_ok(data_parallel_results, check)
