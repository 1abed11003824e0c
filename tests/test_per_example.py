"""`GradientLogger(per_example=True)` against brute force: every example's gradient from the NumPy twin.

Example i's own gradient is the twin's gradient on the one-row batch `(X[i], y[i])` (with its
sample weight), at the weights the logged step started from (`snapshots=True`), computed in
float64. The statistics are computed below from those per-example gradients with the textbook
formulas (Schneider et al. 2021, Cockpit; McCandlish et al. 2018), written independently of the
logger's closed form (`kerasbp/logger/per_example.py`), which never forms a per-example gradient.
Layers the twin lacks (Conv1D, LayerNormalization, Embedding: the logger's vectorized fallback)
are checked the same way against Keras's own gradient of each example's loss, one at a time.

Tolerances (relative, on every logged step, batches of 6 and a last one of 5):

- float64 model: 1e-10 for the norms and every statistic but the GSNR (the same quantities in
  float64 two ways; the statistics subtract nearly equal sums, which costs a few digits).
- the mean GSNR, both dtypes: `max(1e-10, 100 eps (1 + max GSNR))`, `max GSNR` the largest
  ratio of one parameter. The closed form computes each parameter's variance as
  `E[g_i^2] - g^2`, which cancels to `1 / (1 + GSNR)` of its terms: a parameter whose gradient
  is nearly the same for every example (GSNR 1e5 occurs) carries that many times `eps` of
  relative error into the mean (measured in float32 over 9 runs: 7.1e-4 relative).
- float32 model against the float64 truth at the same (float32) weights, `eps` = 1.19e-7
  (`float32_rtol`; worst measured over 9 runs of 8 steps in brackets): the norms `10 eps`
  (3 eps); each of the three tests `100 eps (1 + 1 / test^2)`: its radicand subtracts terms of
  order 1 and is of order `test^2`, so a small test value loses digits (36 eps / test^2);
  `b_simple` `100 eps (1 + |b_simple|)` (36 eps).
"""

import numpy as np
import pytest

import keras
import tensorflow as tf
from kerasbp import GradientLogger, NumpyMLP, compile_model, load_gradient_log
from kerasbp.logger import sidecar
from kerasbp.logger.log import NOISE
from per_example_checks import batches, check_against_brute_force, check_mlp, data, definitions, gsnr_rtol, mlp, per_example_gradients

# ---------------------------------------------------------------- against brute force


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", ["mse", "binary_crossentropy", "categorical_crossentropy"], ids=["mse", "bce", "cce"])
def test_norms_and_statistics_equal_brute_force(loss, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("float64")
    check_mlp(loss, dtype, dtype)


def test_sample_weights_weigh_each_example(float64):
    # Example i's own loss as Keras weighs it: w_i * l_i; their mean is still the batch gradient.
    X, y = data(14, 4, "binary_crossentropy", seed=1, dtype="float64")
    w = np.random.default_rng(2).uniform(0.2, 3.0, size=14)
    model = compile_model(mlp("binary_crossentropy"), "adam", learning_rate=0.01, loss="binary_crossentropy")
    logger = GradientLogger(per_example=True, snapshots=True, record="full")
    model.fit(X, y, sample_weight=w, epochs=1, batch_size=4, shuffle=False, callbacks=[logger], verbose=0)
    check_against_brute_force(logger, model, X, y, "binary_crossentropy", 4, "float64", sample_weight=w)


def test_weight_penalties_are_added_to_every_example(float64):
    # L2 penalties on kernels and biases: not per example; each example's loss carries the whole
    # penalty (so the twin's one-row gradient includes it), and the mean is the batch gradient.
    X, y = data(12, 4, "mse", seed=4, dtype="float64")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.05), bias_regularizer=keras.regularizers.L2(0.1)),
            keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L1L2(0.02, 0.03)),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse")
    logger = GradientLogger(per_example=True, snapshots=True, record="full")
    model.fit(X, y, epochs=1, batch_size=5, shuffle=False, callbacks=[logger], verbose=0)
    check_against_brute_force(logger, model, X, y, "mse", 5, "float64")


def test_dropout_uses_the_mask_of_the_step(float64):
    # The masks Dropout drew in each step are read back through a hook on its call; brute force
    # with those masks equals the logger, which differentiates the step's own forward pass.
    X, y = data(12, 4, "mse", seed=5, dtype="float64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.5, seed=1), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    dropout = model.layers[1]
    mask = keras.Variable(np.zeros((4, 8)), trainable=False)
    call = dropout.call

    def recording_call(inputs, training=None):
        out = call(inputs, training=training)
        mask.assign(keras.ops.cast(keras.ops.not_equal(out, 0), "float64"))
        return out

    object.__setattr__(dropout, "call", recording_call)
    masks = []
    recorder = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: masks.append(np.array(mask.numpy())))
    logger = GradientLogger(per_example=True, snapshots=True, record="full")
    model.fit(X, y, epochs=1, batch_size=4, shuffle=False, callbacks=[logger, recorder], verbose=0)
    object.__delattr__(dropout, "call")
    assert 0 < np.mean(masks) < 1
    check_against_brute_force(logger, model, X, y, "mse", 4, "float64", masks=[masks])
    # a fresh mask would give other norms: the first step with all-ones masks differs
    twin = NumpyMLP.from_keras(model)
    G = per_example_gradients(twin, [w[0] for w in logger.weights()], X[:4], y[:4], "mse", masks=[np.ones((4, 8)) * 2])
    assert not np.allclose(np.linalg.norm(G, axis=1), logger.per_example_norms()[0])


def test_every_n_steps_and_steps_per_execution(float64):
    X, y = data(20, 4, "mse", seed=6, dtype="float64")
    model = compile_model(mlp("mse"), "sgd", learning_rate=0.05, steps_per_execution=3)
    logger = GradientLogger(per_example=True, every_n_steps=2, snapshots=True)
    model.fit(X, y, epochs=2, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)  # 4 steps per epoch
    assert logger.steps.tolist() == [0, 2, 4, 6]
    check_against_brute_force(logger, model, X, y, "mse", 6, "float64")


def test_batch_of_one_gives_nan_statistics_and_the_gradient_norm():
    X, y = data(3, 4, "mse", seed=7)
    model = compile_model(mlp("mse"), "sgd", learning_rate=0.05)
    logger = GradientLogger(per_example=True)
    model.fit(X, y, epochs=1, batch_size=1, shuffle=False, callbacks=[logger], verbose=0)
    for name in NOISE:
        assert np.all(np.isnan(logger.noise[name])), name
    assert np.isnan(logger.noise_scale())
    norms = logger.per_example_norms()
    assert norms.shape == (3, 1)
    np.testing.assert_allclose(norms[:, 0], logger.global_norms, rtol=1e-6)  # B = 1: g_1 = g


def test_noise_scale_is_a_ratio_of_means(float64):
    X, y = data(24, 4, "mse", seed=8, dtype="float64")
    model = compile_model(mlp("mse"), "sgd", learning_rate=0.05)
    logger = GradientLogger(per_example=True, snapshots=True)
    model.fit(X, y, epochs=2, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)
    twin = NumpyMLP.from_keras(model)
    S, G2 = [], []
    for r, step in enumerate(logger.steps):
        rows = batches(24, 6)[int(step) % 4]
        d = definitions(per_example_gradients(twin, [w[r] for w in logger.weights()], X[rows], y[rows], "mse"))
        S.append(d["S"])
        G2.append(d["G2"])
    np.testing.assert_allclose(logger.noise_scale(), np.mean(S) / np.mean(G2), rtol=1e-10)
    assert not np.isclose(logger.noise_scale(), np.mean(logger.noise["b_simple"]))  # not the mean of the ratios


def test_mixed_precision_deltas_are_unscaled():
    # mixed_float16: compile adds a LossScaleOptimizer; the deltas carry the loss scale, which
    # the statistics divide out. float16 arithmetic: 3e-2 relative.
    keras.config.set_dtype_policy("mixed_float16")
    try:
        X, y = data(12, 4, "mse", seed=9)
        model = compile_model(mlp("mse"), "sgd", learning_rate=0.01)
    finally:
        keras.config.set_dtype_policy("float32")
    twin = NumpyMLP.from_keras(mlp("mse"))  # the same architecture in float32 (the twin has no mixed precision)
    logger = GradientLogger(per_example=True, snapshots=True)
    model.fit(X, y, epochs=1, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)
    assert np.all(logger.loss_scales > 1)
    for r in range(2):
        d = definitions(per_example_gradients(twin, [w[r] for w in logger.weights()], X[6 * r : 6 * r + 6], y[6 * r : 6 * r + 6], "mse"))
        np.testing.assert_allclose(logger.per_example_norms()[r], d["norms"], rtol=3e-2)
        np.testing.assert_allclose(logger.noise["norm_test"][r], d["norm_test"], rtol=3e-2)


# ---------------------------------------------------------------- the vectorized fallback


def keras_per_example_gradients(model, weights, X, y):
    """float64 `(B, P)` by brute force in Keras itself (eager): each example's own loss and gradient."""
    model.set_weights(weights)
    rows = []
    for i in range(len(X)):
        with tf.GradientTape() as tape:
            out = model(X[i : i + 1], training=True)
            loss = model.compute_loss(X[i : i + 1], y[i : i + 1], out)
        rows.append(np.concatenate([np.ravel(tf.convert_to_tensor(g).numpy()) for g in tape.gradient(loss, model.trainable_weights)]))
    return np.array(rows)


def conv_model():
    return keras.Sequential(
        [
            keras.Input((6, 3)),
            keras.layers.Conv1D(4, 3, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.05)),
            keras.layers.LayerNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="relu"),
            keras.layers.Dense(2),
        ]
    )


def embedding_model():
    return keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(7, 3), keras.layers.Flatten(), keras.layers.Dense(2)])


@pytest.mark.parametrize("make", [conv_model, embedding_model], ids=["conv1d-layernorm-l2", "embedding"])
def test_other_layers_take_the_vectorized_fallback(make, float64):
    # Conv1D (tanh, with an L2 penalty), LayerNormalization and Embedding: per-example gradients
    # by tf.vectorized_map at the step's weights, against Keras's own gradient of each example's
    # loss (eager, one example at a time): 1e-10 relative.
    rng = np.random.default_rng(13)
    if make is embedding_model:
        X = rng.integers(0, 7, size=(14, 5)).astype("int32")
    else:
        X = rng.normal(size=(14, 6, 3))
    y = rng.normal(size=(14, 2))
    model = make()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    logger = GradientLogger(per_example=True, snapshots=True, record="full")
    model.fit(X, y, epochs=1, batch_size=4, shuffle=False, callbacks=[logger], verbose=0)  # batches 4, 4, 4, 2
    norms = logger.per_example_norms()
    for r, rows in enumerate(batches(14, 4)):
        G = keras_per_example_gradients(model, [w[r] for w in logger.weights()], X[rows], y[rows])
        expected = definitions(G)
        B = len(G)
        np.testing.assert_allclose(norms[r, :B], expected["norms"], rtol=1e-10)
        assert np.isnan(norms[r, B:]).all()
        for name in NOISE:
            tol = max(1e-10, gsnr_rtol(np.finfo("float64").eps, expected["gsnr_max"])) if name == "gsnr" else 1e-10
            np.testing.assert_allclose(logger.noise[name][r], expected[name], rtol=tol, err_msg=f"{name}, step {r}")
        logged = np.concatenate([np.ravel(g[r]) for g in logger.gradients()])
        np.testing.assert_allclose(G.mean(axis=0), logged, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- the model is left as it was


def unnamed(config):
    """A Keras config without the names Keras numbers per model (`sequential_2`, `input_layer_3`)."""
    if isinstance(config, dict):
        return {k: unnamed(v) for k, v in config.items() if k not in ("name", "inbound_nodes")}
    if isinstance(config, (list, tuple)):
        return [unnamed(v) for v in config]
    return config


def test_the_model_is_restored_after_fit(tmp_path):
    # The same model trained with and without the logger: the same layers afterwards, the same
    # weights bit for bit (the taps are identities), and the same saved model.
    X, y = data(12, 4, "mse", seed=10)
    models = [compile_model(mlp("mse"), "sgd", learning_rate=0.05) for _ in range(2)]
    logged, plain = models
    before = {layer.name: layer.activation for layer in logged.layers}
    logged.fit(X, y, epochs=1, batch_size=4, shuffle=False, callbacks=[GradientLogger(per_example=True)], verbose=0)
    plain.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for layer in logged.layers:
        assert layer.activation is before[layer.name], layer.name
        assert "call" not in layer.__dict__ and "activation" in layer.__dict__, layer.name
    for a, b in zip(logged.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    configs = []
    for name, model in zip(("logged", "plain"), models, strict=True):
        model.save(tmp_path / f"{name}.keras")
        configs.append(keras.saving.load_model(tmp_path / f"{name}.keras").get_config())
    assert unnamed(configs[0]) == unnamed(configs[1])
    logged.fit(X, y, epochs=1, batch_size=4, verbose=0)  # on without the logger: no taps left


def test_the_model_saved_during_fit_is_the_model(tmp_path):
    # While the taps are installed the layers' configs are unchanged: a checkpoint saved
    # mid-fit loads with the activations it had.
    X, y = data(12, 4, "mse", seed=14)
    model = compile_model(mlp("mse"), "sgd", learning_rate=0.05)
    config = model.get_config()
    seen = []
    spy = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(model.get_config()))
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "mid.keras", save_freq=1)
    model.fit(X, y, epochs=1, batch_size=4, callbacks=[GradientLogger(per_example=True), spy, checkpoint], verbose=0)
    assert len(seen) == 3 and all(c == config for c in seen)
    back = keras.saving.load_model(tmp_path / "mid.keras")
    assert [layer.activation.__name__ for layer in back.layers] == ["relu", "tanh", "sigmoid", "linear"]


# ---------------------------------------------------------------- saved and loaded


def assert_same_noise(back, log):
    assert back.per_example
    np.testing.assert_array_equal(back.per_example_norms(), log.per_example_norms())
    assert sorted(back.noise) == sorted(log.noise)
    for name in NOISE:
        np.testing.assert_array_equal(back.noise[name], log.noise[name])
    assert back.noise_scale() == log.noise_scale()


def test_saved_loaded_streamed_and_recovered(tmp_path):
    X, y = data(23, 4, "mse", seed=11)
    model = compile_model(mlp("mse"), "sgd", learning_rate=0.05)
    logger = GradientLogger(per_example=True, record="full", path=tmp_path / "folder")
    model.fit(X, y, epochs=2, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)
    model.fit(X, y, epochs=1, batch_size=8, shuffle=False, callbacks=[logger], verbose=0)  # wider batches
    norms = logger.per_example_norms()
    assert norms.shape == (11, 8) and np.isnan(norms[:8, 6:]).all() and np.isnan(norms[-1, 7:]).all()
    logger.to_npz(tmp_path / "log.npz")
    assert_same_noise(load_gradient_log(tmp_path / "log.npz"), logger)
    assert_same_noise(load_gradient_log(tmp_path / "folder"), logger)
    # the sidecar of a killed run: chunks of different widths
    writer = sidecar.SidecarWriter(tmp_path / "killed.npz")
    for n in (4, 9, 11):
        part = load_gradient_log(tmp_path / "log.npz")
        part._chunks = {key: [value[0][:n]] if value else [] for key, value in part._chunks.items()}
        part._chunks["per_example_norms"] = [norms[:n, : 6 if n < 9 else 8]]
        part._cache.clear()
        writer.flush(part, force=True)
    with pytest.warns(RuntimeWarning, match="recovered 11"):
        back = load_gradient_log(tmp_path / "killed.npz")
    assert_same_noise(back, logger)


def test_a_log_without_per_example_has_no_noise(tmp_path):
    X, y = data(8, 4, "mse")
    model = compile_model(mlp("mse"), "sgd")
    logger = GradientLogger()
    model.fit(X, y, epochs=1, batch_size=4, callbacks=[logger], verbose=0)
    assert logger.noise == {}
    with pytest.raises(ValueError, match="per_example=True"):
        logger.per_example_norms()
    with pytest.raises(ValueError, match="per_example=True"):
        logger.noise_scale()
    logger.to_npz(tmp_path / "log.npz")
    back = load_gradient_log(tmp_path / "log.npz")
    assert back.noise == {} and not back.per_example


# ---------------------------------------------------------------- refused, by name


def test_per_example_must_be_a_bool():
    with pytest.raises(TypeError, match="per_example"):
        GradientLogger(per_example="yes")


def _fit(model, X, y, **kwargs):
    model.fit(X, y, epochs=1, batch_size=4, callbacks=[GradientLogger(per_example=True)], verbose=0, **kwargs)


def test_batch_normalization_in_training_mode_is_refused():
    X, y = data(8, 4, "mse")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="BatchNormalization layer 'bn'.*couples the examples"):
        _fit(model, X, y)
    model.layers[1].trainable = False  # inference mode: moving statistics, examples independent
    model.compile("sgd", "mse")
    _fit(model, X, y)


def test_recurrent_layers_and_layers_with_random_numbers_are_refused():
    X = np.zeros((8, 5, 3), "float32")
    y = np.zeros((8, 2), "float32")
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="rnn"), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"recurrent layers.*layer 'rnn' \(LSTM\)"):
        _fit(model, X, y)

    class NoisyScale(keras.layers.Layer):  # a weight and random numbers: the fallback cannot replay them
        def build(self, shape):
            self.w = self.add_weight(shape=shape[-1:], initializer="ones")
            self.noise = keras.random.SeedGenerator(0)

        def call(self, x):
            return x * self.w + keras.random.normal(keras.ops.shape(x), seed=self.noise)

    model = keras.Sequential([keras.Input((4,)), NoisyScale(name="noisy"), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    X, y = data(8, 4, "mse")
    with pytest.raises(ValueError, match=r"random numbers of layer 'noisy' \(NoisyScale: it holds a SeedGenerator, 'noise'\)"):
        _fit(model, X, y)


def test_a_loss_that_is_not_a_mean_is_refused():
    X, y = data(8, 4, "mse")
    model = compile_model(mlp("mse"), "sgd", loss=keras.losses.MeanSquaredError(reduction="sum"))
    with pytest.raises(ValueError, match="reduction='sum_over_batch_size'.*MeanSquaredError with reduction='sum'"):
        _fit(model, X, y)


def test_dense_on_3d_inputs_is_refused():
    X = np.zeros((8, 3, 4), "float32")
    y = np.zeros((8, 3, 2), "float32")
    model = keras.Sequential([keras.Input((3, 4)), keras.layers.Dense(2, name="seq")])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"2-D inputs.*layer 'seq'.*, 3, 4\)"):
        _fit(model, X, y)


def test_a_shared_dense_layer_is_refused():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    outputs = keras.layers.Dense(2)(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    X, y = data(8, 4, "mse")
    with pytest.raises(ValueError, match="layer 'shared' called 2 times"):
        _fit(model, X, y)


def test_xla_is_refused():
    X, y = data(8, 4, "mse")
    model = compile_model(mlp("mse"), "sgd", jit_compile=True)
    with pytest.raises(ValueError, match="does not support XLA.*jit_compile=True.*Compile with jit_compile=False"):
        _fit(model, X, y)


def test_lora_dense_layers_are_refused():
    X, y = data(8, 4, "mse")
    model = mlp("mse")
    model.layers[0].enable_lora(2)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="LoRA or quantized Dense layers. Received: layer 'dense_0'"):
        _fit(model, X, y)


# ---------------------------------------------------------------- the figure


def test_plot_gradient_noise_draws_every_statistic(tmp_path):
    import matplotlib.pyplot as plt

    from kerasbp.plotting import plot_gradient_noise

    X, y = data(23, 4, "mse", seed=12)
    model = compile_model(mlp("mse"), "sgd", learning_rate=0.05)
    logger = GradientLogger(per_example=True)
    model.fit(X, y, epochs=2, batch_size=6, shuffle=False, callbacks=[logger], verbose=0)
    logger.to_npz(tmp_path / "log.npz")
    fig = plot_gradient_noise(load_gradient_log(tmp_path / "log.npz"))
    lines = fig.axes[0].get_lines()
    labels = [line.get_label() for line in lines]
    assert labels[:5] == ["norm test", "inner-product test", "orthogonality test", "mean GSNR", "B_simple (noise scale per step)"]
    for line, name in zip(lines, NOISE, strict=False):
        x, v = line.get_data()
        np.testing.assert_array_equal(x, logger.steps)
        expected = logger.noise[name]
        np.testing.assert_array_equal(v, np.where(expected > 0, expected, np.nan))
    assert labels[5] == f"noise scale {logger.noise_scale():.3g} (run)" and labels[6] == "batch size 6"
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)
    _, ax = plt.subplots()
    assert plot_gradient_noise(logger, ax=ax) is ax.figure
    plt.close(ax.figure)
    plain = GradientLogger()
    model.fit(X, y, epochs=1, batch_size=6, callbacks=[plain], verbose=0)
    with pytest.raises(ValueError, match="per_example=True"):
        plot_gradient_noise(plain)
    with pytest.raises(TypeError, match="GradientLog"):
        plot_gradient_noise(logger.noise)
    with pytest.raises(TypeError, match="Axes"):
        plot_gradient_noise(logger, ax="axes")



# ---------------------------------------------------------------- the benchmark


@pytest.mark.slow  # checks only that the benchmark script runs (tests/test_benchmarks.py does so for run.py by default)
def test_benchmark_quick_run_writes_its_figures(tmp_path):
    # speed is measured by the script, never asserted here
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "per_example.py"), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())["per_example"]
    assert set(r) == {"fit", "fit_logger_stats_every_step", "fit_logger_per_example_every_step", "fit_logger_per_example_every_10"}
    assert r["fit"]["ratio_to_fit"] == r["fit"]["cpu_ratio_to_fit"] == 1.0
    assert all(v["seconds"] > 0 and v["cpu_seconds"] > 0 for v in r.values())
    assert "x fit" in proc.stdout
