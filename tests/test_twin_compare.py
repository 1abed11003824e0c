"""`compare` against Keras (TensorFlow backend) for every optimizer, option, activation, loss and layer.

Default tier: each optimizer, option, activation, loss and layer at least once, float64, a few
steps, teacher-forced within 1e-10 (what `report.ok` checks). Slow tier: the full matrices of
the issue, 200 steps, and free-running float64 within 1e-9 for SGD, Adam, RMSprop, AdamW, Nadam.
"""

import functools

import keras
import numpy as np
import pytest

import kerasbp as kb
from kerasbp.precision import floatx
from kerasbp.comparison import TOLERANCES
from kerasbp.reference import OPTIMIZERS
from kerasbp.reference import schedules as twin_schedules

RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 3))
Y_BIN = (RNG.normal(size=(24, 2)) > 0).astype(float)
Y_REAL = RNG.normal(size=(24, 2))
OPTIONS = {
    "none": {},
    "clipnorm": {"clipnorm": 0.05},
    "global_clipnorm": {"global_clipnorm": 0.05},
    "clipvalue": {"clipvalue": 0.01},
    "weight_decay": {"weight_decay": 0.1},
    "schedule": {},
    "ema": {"use_ema": True, "ema_overwrite_frequency": 3},
    "grad_accum": {"gradient_accumulation_steps": 3},
}


def _optimizer(name, option):
    lr = keras.optimizers.schedules.ExponentialDecay(0.05, 3, 0.7) if option == "schedule" else 0.05
    return getattr(keras.optimizers, name)(learning_rate=lr, **OPTIONS[option])


GELU_APPROXIMATE = functools.partial(keras.activations.gelu, approximate=True)  # Keras cannot serialize it


def _activation(name):
    return GELU_APPROXIMATE if name == "gelu_approximate" else name


def _mlp(optimizer, hidden="tanh", out="sigmoid", loss="binary_crossentropy"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation=_activation(hidden)), keras.layers.Dense(2, activation=_activation(out))])
    model.compile(optimizer=optimizer, loss=loss)
    return model


def _check(report, mode_tol=None):
    assert report.ok, report.summary()
    if mode_tol is not None:
        assert max(report._worst("free").values()) <= mode_tol, report.summary()


KERAS_CLASSES = [spec.keras_class for spec in OPTIMIZERS.values()]
# each optimizer once in the default tier, each common option at least once among them
DEFAULT_PAIRS = list(zip(KERAS_CLASSES, ["none", "clipnorm", "global_clipnorm", "clipvalue", "weight_decay", "schedule", "ema", "grad_accum", "none", "schedule", "weight_decay", "clipnorm"], strict=True))


@pytest.mark.parametrize(("name", "option"), DEFAULT_PAIRS, ids=[f"{n}-{o}" for n, o in DEFAULT_PAIRS])
def test_every_optimizer_and_option_teacher_forced_float64(name, option):
    with floatx("float64"):
        report = kb.compare(_mlp(_optimizer(name, option)), X, Y_BIN, epochs=2, batch_size=8)
    _check(report)


ACTIVATION_LOSSES = [
    ("relu", "linear", "mse", Y_REAL),
    ("leaky_relu", "linear", "mae", Y_REAL),
    ("elu", "linear", "huber", Y_REAL),
    ("selu", "sigmoid", "binary_crossentropy", Y_BIN),
    ("gelu", "softplus", "mse", np.abs(Y_REAL)),
    ("silu", "tanh", "mae", np.tanh(Y_REAL)),
    ("softplus", "gelu", "huber", Y_REAL),
    ("sigmoid", "silu", "mse", Y_REAL),
    ("tanh", "relu", "mse", np.abs(Y_REAL)),
    ("linear", "leaky_relu", "huber", Y_REAL),
    ("tanh", "elu", "mae", Y_REAL),
    ("relu", "selu", "mse", Y_REAL),
    ("gelu_approximate", "linear", "mse", Y_REAL),
]


@pytest.mark.parametrize(("hidden", "out", "loss", "y"), ACTIVATION_LOSSES, ids=[f"{h}-{o}-{l}" for h, o, l, _ in ACTIVATION_LOSSES])
def test_activations_and_losses_float64(hidden, out, loss, y):
    with floatx("float64"):
        model = _mlp(keras.optimizers.SGD(0.05), hidden, out, loss)
        report = kb.compare(model, X, y, epochs=1, batch_size=8)
    _check(report)
    if hidden == "gelu_approximate":  # compare shared the function with its copy; the user's model keeps it
        assert model.layers[0].activation is GELU_APPROXIMATE


def _spiral_model(optimizer="adam", loss="sparse_categorical_crossentropy"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.L2(0.01)),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(3, bias_regularizer=keras.regularizers.L1(0.01)),
            keras.layers.Activation("softmax"),
        ]
    )
    model.compile(optimizer=optimizer, loss=loss)
    return model


def test_dense_batchnorm_dropout_softmax_on_spirals_with_regularizers_and_weights():
    X_s, y_s = kb.spiral_data(n_per_class=16)
    with floatx("float64"):
        model = _spiral_model()
        _check(kb.compare(model, X_s, y_s, epochs=2, batch_size=16))
        _check(kb.compare(model, X_s, y_s, epochs=1, batch_size=16, class_weight={0: 2.0, 2: 0.5}))
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
        _check(kb.compare(model, X_s, np.eye(3)[y_s], epochs=1, batch_size=16, sample_weight=np.linspace(0.1, 2, len(X_s))))


def test_moving_statistics_are_compared_and_a_wrong_momentum_is_caught(monkeypatch):
    X_s, y_s = kb.spiral_data(n_per_class=16)
    with floatx("float64"):
        model = _spiral_model()
        report = kb.compare(model, X_s, y_s, epochs=1, batch_size=16)
        _check(report)
        assert [name.split("/")[-1] for name in report.moving_names] == ["moving_mean", "moving_variance"]
        assert report.teacher["moving_rel"].shape == (report.steps, 2)
        assert "moving statistics" in report.summary()
        # A twin whose moving average uses the wrong momentum: its gradients and weights still agree.
        layers = kb.reference.layers

        class WrongMomentum(layers.BatchNormalization):
            def __init__(self, *args, momentum=0.99, **kwargs):
                super().__init__(*args, momentum=0.9, **kwargs)

        monkeypatch.setattr(kb.reference.from_keras, "BatchNormalization", WrongMomentum)
        wrong = kb.compare(model, X_s, y_s, epochs=1, batch_size=16)
    assert not wrong.ok
    step, name, quantity, _, rel = wrong.first_failure
    assert (step, quantity, name.split("/")[-1]) == (0, "moving", "moving_mean") and rel > 1
    assert max(wrong.teacher["gradient_rel"].max(), wrong.teacher["weights_rel"].max()) <= 1e-10


@pytest.mark.parametrize("name", ["CosineDecay", "CosineDecayRestarts"])
def test_cosine_schedules_float64_and_a_wrong_schedule_is_caught(name, monkeypatch):
    # TensorFlow's float32 cos is not correctly rounded: the rates differ by an ulp or two, which
    # the learning-rate row judges; teacher-forced, the update rule runs at Keras's own rate.
    schedule = getattr(keras.optimizers.schedules, name)(0.1, 7)
    with floatx("float64"):
        model = kb.compile_model(kb.xor_model(seed=0), keras.optimizers.Adam(schedule), loss="binary_crossentropy")
        report = kb.compare(model, *kb.xor_data(), epochs=40, batch_size=4)
        _check(report)
        assert 0 < report._worst("teacher")["learning_rate"] <= TOLERANCES["float64"]["learning_rate"]
        assert report._worst("teacher")["weights"] <= 1e-12

        twin_class = twin_schedules.SCHEDULES[name]

        class OffByOnePerMille(twin_class):
            def __call__(self, step):
                return super().__call__(step) * np.float32(1.001)

        monkeypatch.setitem(twin_schedules.SCHEDULES, name, OffByOnePerMille)
        wrong = kb.compare(model, *kb.xor_data(), epochs=2, batch_size=4)
    step, variable, quantity, _, rel = wrong.first_failure
    assert (step, variable, quantity) == (0, None, "learning_rate") and rel == pytest.approx(1e-3, rel=1e-3)
    assert "the schedule" in wrong.summary()


def test_float32_within_the_stated_tolerance():
    # float32: losses within 1e-5, gradients 1e-4 of the batch terms, updates 1e-4 (TOLERANCES)
    X_s, y_s = kb.spiral_data(n_per_class=16)
    report = kb.compare(_spiral_model(keras.optimizers.Nadam(0.01, clipnorm=1.0)), X_s, y_s, epochs=2, batch_size=16)
    _check(report)
    assert report._worst("teacher")["gradient"] < 1e-5, report.summary()


def test_the_model_backend_path_and_refusals():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation=functools.partial(keras.activations.gelu, approximate=True))])
    assert kb.NumpyMLP.from_keras(model).activations == ["gelu_approximate"]
    assert kb.NumpyMLP.from_keras(model).backend == "tensorflow"
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"`sample_weight` and `class_weight` cannot be given together"):
        kb.compare(model, np.zeros((2, 2)), np.zeros((2, 2)), sample_weight=np.ones(2), class_weight={0: 1.0})


# ---------------------------------------------------------------- slow tier: the full matrices


@pytest.mark.slow
@pytest.mark.parametrize("option", ["none", "clipnorm", "global_clipnorm", "weight_decay", "schedule", "clipvalue", "ema", "grad_accum"])
@pytest.mark.parametrize("name", KERAS_CLASSES)
def test_matrix_200_steps_teacher_forced_float64(name, option):
    with floatx("float64"):
        report = kb.compare(_mlp(_optimizer(name, option)), X, Y_BIN, epochs=67, batch_size=8)  # 201 steps
    _check(report)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "AdamW", "Nadam"])
def test_free_running_float64_200_steps_within_1e_9(name):
    with floatx("float64"):
        opt = getattr(keras.optimizers, name)(learning_rate=0.01)
        report = kb.compare(_mlp(opt), X, Y_BIN, epochs=67, batch_size=8)
    _check(report, mode_tol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", KERAS_CLASSES)
def test_matrix_float32(name):
    report = kb.compare(_mlp(_optimizer(name, "clipnorm")), X.astype("float32"), Y_BIN, epochs=10, batch_size=8)
    _check(report)


@pytest.mark.slow
@pytest.mark.parametrize("hidden", ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_approximate", "silu", "softplus"])
@pytest.mark.parametrize("loss", ["mse", "mae", "huber"])
def test_activation_loss_matrix_float64(hidden, loss):
    with floatx("float64"):
        report = kb.compare(_mlp(keras.optimizers.Adam(0.01), hidden, hidden, loss), X, Y_REAL, epochs=5, batch_size=8)
    _check(report)


@pytest.mark.slow
def test_spirals_200_steps_float64():
    X_s, y_s = kb.spiral_data(n_per_class=32)
    with floatx("float64"):
        _check(kb.compare(_spiral_model(keras.optimizers.AdamW(0.01)), X_s, y_s, epochs=34, batch_size=16))


def test_gradient_accumulation_with_a_cosine_schedule_float64():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 20)
    with floatx("float64"):
        model = kb.compile_model(kb.xor_model(seed=0), keras.optimizers.Adam(schedule, gradient_accumulation_steps=2), loss="binary_crossentropy")
        report = kb.compare(model, *kb.xor_data(), epochs=20, batch_size=2)
    _check(report)
    assert report.scheduled and report._worst("teacher")["weights"] <= 1e-12
