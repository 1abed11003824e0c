"""Data-parallel training: `GradientLogger` under `tf.distribute`, and the gradient noise scale.

The MirroredStrategy checks need 2 logical CPU devices, which TensorFlow fixes when it first
initializes its devices (this pytest process has done so), so they run once, in a process of
their own (`tests/distributed_checks.py`, bounded by `TIMEOUT_S`), and each test here reports
one of them. The rest runs here: the noise-scale formulas with hand-computed values, one
replica without a strategy, bad input.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import check_runner
from kerasbp import GradientLogger, compile_model, dense_model, load_gradient_log
from kerasbp.logger import gns, replicas
from kerasbp.logger.log import GradientLog

HERE = os.path.dirname(os.path.abspath(__file__))

#: Seconds the checks' process may take (about 30 s alone on 2 CPU cores).
TIMEOUT_S = 420

CHECKS = [
    "reduced_gradient_equals_the_twins",
    "noise_scale_equals_the_formula_with_the_twins_slices",
    "global_clipnorm_sums_the_replicas_clipped_gradients",
    "stats_mode_uneven_batch_and_every_n_steps",
    "one_device_mirrored_strategy_is_one_replica",
    "refusals",
    "jobs_with_devices_train_as_on_one_device",
]


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "results.json"
    return check_runner.run_script(os.path.join(HERE, "distributed_checks.py"), out, CHECKS, TIMEOUT_S)


@pytest.mark.parametrize("check", CHECKS)
def test_mirrored_strategy_on_two_devices(check, mirrored_results):
    check_runner.assert_ok(mirrored_results, check)


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_multi_worker_plain_keras_fails_and_the_logger_refuses_writing_nothing(tmp_path):
    # Two worker processes on localhost ports (TF_CONFIG), bounded in time and killed after.
    # Plain Keras 3.15.1 fit fails in both before the first step; GradientLogger refuses the
    # strategy by name in both, before any worker writes a file. When a Keras release trains
    # here, this test fails and multi-worker support can be built (README, "Distributed training").
    root = os.path.dirname(HERE)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    ports = [str(p) for p in _free_ports(2)]
    script = os.path.join(HERE, "multiworker_checks.py")
    workers = [
        subprocess.Popen([sys.executable, script, str(task), *ports, str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for task in (0, 1)
    ]
    reports = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=TIMEOUT_S)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            assert lines, f"worker gave no report (exit {worker.returncode}):\n{err[-3000:]}"
            reports.append(json.loads(lines[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [r["task"] for r in reports] == [0, 1] and all(r["replicas"] == 2 for r in reports)
    for r in reports:
        assert r["fit_error"] is not None and "PerReplica" in r["fit_error"], r["fit_error"]
        assert "MultiWorkerMirroredStrategy" in r["logger_error"], r["logger_error"]
        assert not r["wrote"]
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------- the noise scale, by hand
def test_two_batch_estimates_known_values():
    # B_small = 2, B_big = 4, |G_small|^2 = 3, |G_big|^2 = 2:
    # |G|^2 = (4*2 - 2*3) / (4 - 2) = 1;  S = (3 - 2) / (1/2 - 1/4) = 4;  B_simple = 4.
    est = gns.two_batch_estimates(np.array([2.0, 4.0]), np.array([4.0, 16.0]), np.array([3.0, 5.0]), np.array([2.0, 2.0]))
    # second step: |G|^2 = (16*2 - 4*5) / 12 = 1;  S = (5 - 2) / (1/4 - 1/16) = 16
    np.testing.assert_allclose(est["g2"], [1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(est["trace"], [4.0, 16.0], rtol=1e-15)
    np.testing.assert_allclose(est["b_simple"], [4.0, 16.0], rtol=1e-15)


def test_two_batch_estimates_recover_a_known_noise_scale():
    # With exact expectations E|G_B|^2 = |G|^2 + tr(Sigma) / B the estimators are exact.
    g2, trace = 0.25, 3.0
    small, big = g2 + trace / 8, g2 + trace / 32
    est = gns.two_batch_estimates(8, 32, small, big)
    assert float(est["g2"]) == pytest.approx(g2, rel=1e-12)
    assert float(est["trace"]) == pytest.approx(trace, rel=1e-12)
    assert float(est["b_simple"]) == pytest.approx(trace / g2, rel=1e-12)


def test_ratio_of_means_is_not_the_mean_of_ratios():
    trace, g2 = np.array([4.0, 2.0, np.nan]), np.array([1.0, 3.0, 1.0])
    assert gns.ratio_of_means(trace, g2) == pytest.approx(6.0 / 4.0, rel=1e-15)  # the NaN step left out
    assert gns.ratio_of_means(trace, g2) != pytest.approx(np.mean([4.0, 2.0 / 3.0]))
    assert np.isnan(gns.ratio_of_means([np.nan], [1.0]))


def test_from_replicas_undoes_kerass_one_over_replicas_and_skips_uneven_steps():
    # Two replicas of 4 examples; Keras hands each 1/2 of its slice's mean gradient, so
    # |G_small|^2 = mean_r |2 g_r|^2. Step 1's replicas had 4 and 3 examples: NaN.
    g = np.array([[0.5, 1.0], [0.5, 1.0]])  # |g_r|^2 per replica
    est = gns.from_replicas(np.array([[4, 4], [4, 3]]), g, np.array([1.0, 1.0]))
    want = gns.two_batch_estimates(4, 8, 4 * 0.75, 1.0)
    for key in ("g2", "trace", "b_simple"):
        assert est[key][0] == pytest.approx(float(want[key]), rel=1e-15)
        assert np.isnan(est[key][1])


def test_from_replicas_bad_shapes():
    with pytest.raises(ValueError, match="batch_sizes and replica_squares must be"):
        gns.from_replicas(np.ones((3, 2)), np.ones((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="global_squares"):
        gns.from_replicas(np.ones((3, 2)), np.ones((3, 2)), np.ones(2))


def test_estimates_are_nan_where_the_big_batch_is_not_bigger():
    est = gns.two_batch_estimates(4, 4, 1.0, 1.0)
    assert np.isnan(est["g2"]) and np.isnan(est["trace"]) and np.isnan(est["b_simple"])


# ------------------------------------------------------------ one replica, without a strategy
def _regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 2)).astype("float32")
    return X, (X @ np.array([[1.5], [-2.0]]) + 0.5).astype("float32")


def test_per_replica_without_a_strategy_is_one_replica(tmp_path):
    X, y = _regression()
    model = compile_model(dense_model([2, 3, 1], ["tanh", "linear"], seed=2), "sgd", learning_rate=0.05)
    logger = GradientLogger(record="full", per_replica=True)
    model.fit(X, y, batch_size=8, epochs=2, shuffle=False, callbacks=[logger], verbose=0)
    assert logger.strategy is None and logger.n_replicas == 1 and logger.noise == {}
    for r, g in zip(logger.replica_gradients(), logger.gradients(), strict=True):
        assert r.shape == (4, 1, *g.shape[1:])
        np.testing.assert_array_equal(r[:, 0], g)
    np.testing.assert_allclose(logger.replica_stat("norm")[:, 0], logger.stat("norm"), rtol=1e-6)
    with pytest.raises(ValueError, match="2 or more replicas"):
        logger.noise_scale()
    logger.to_npz(tmp_path / "log.npz")
    back = load_gradient_log(tmp_path / "log.npz")
    assert back.per_replica and back.n_replicas == 1
    np.testing.assert_array_equal(back.replica_gradients()[0], logger.replica_gradients()[0])


def test_replica_methods_need_per_replica_and_full():
    log = GradientLog()
    with pytest.raises(ValueError, match="per_replica=True"):
        log.replica_gradients()
    with pytest.raises(ValueError, match="per_replica=True"):
        log.replica_stat("norm")
    log.per_replica = True
    with pytest.raises(ValueError, match='record="full"'):
        log.replica_gradients()
    with pytest.raises(ValueError, match="name"):
        log.replica_stat("weight_norm")  # not a statistic of a replica's gradient alone
    with pytest.raises(ValueError, match="`source` must be None, 'per_example' or 'replicas'"):
        log.noise_scale("examples")
    with pytest.raises(ValueError, match="2 or more replicas"):
        log.noise_scale("replicas")


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_per_replica_must_be_a_bool(value):
    with pytest.raises(TypeError, match="per_replica"):
        GradientLogger(per_replica=value)


def test_clipping_note_only_with_replicas_and_clipping():
    assert replicas.clipping_note({"clipnorm": None, "global_clipnorm": 1.0, "clipvalue": None}, 1) is None
    assert replicas.clipping_note({"clipnorm": None, "global_clipnorm": None, "clipvalue": None}, 4) is None
    note = replicas.clipping_note({"clipnorm": None, "global_clipnorm": 1.0, "clipvalue": None}, 4)
    assert "global_clipnorm=1" in note and "before the all-reduce" in note and "4x the threshold" in note


@pytest.mark.parametrize("devices, message", [("0", "--devices must be a positive integer"), ("2", "--devices must be at most the 1 logical CPU")])
def test_devices_bad_input_names_the_flag(devices, message, capsys):
    # This process runs TensorFlow on one logical CPU device (started here if no test did before):
    # 2 cannot be made any more.
    import tensorflow as tf

    from kerasbp.cli import main_xor

    assert len(tf.config.list_logical_devices("CPU")) == 1
    assert main_xor(["--devices", devices, "--epochs", "1"]) == 2
    assert message in capsys.readouterr().err


def test_no_strategy_is_one_replica():
    assert replicas.check_strategy(None) == 1
