"""Tests for kerasbp.plotting (Agg backend): what each figure holds, and bad input."""

import importlib.util
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402
import kerasbp as kb  # noqa: E402
from kerasbp.plotting import plot_gradient_norms  # noqa: E402
from kerasbp import plotting  # noqa: E402
from kerasbp.logger import load_gradient_log  # noqa: E402
from kerasbp.data import least_squares  # noqa: E402
from kerasbp.jobs import run_compare  # noqa: E402
from kerasbp.plotting import curvature, curves, noise, surfaces, twin  # noqa: E402
from kerasbp.plotting.surfaces import _mse_grid  # noqa: E402
from kerasbp.reference import NumpyMLP  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def xor_log():
    """A GradientLogger after 30 full-batch Adam steps of the 2-4-1 XOR network."""
    X, y = kb.xor_data()
    model = kb.compile_model(kb.xor_model(seed=0), "adam", learning_rate=0.05, loss="binary_crossentropy")
    logger = kb.GradientLogger()
    kb.train(model, X, y, epochs=30, batch_size=4, callbacks=[logger])
    return logger


@pytest.fixture(scope="module")
def deep_log():
    """A GradientLogger on a 4 x Dense(8, sigmoid) stack: the first kernel's norm is the smallest."""
    X, y = kb.xor_data()
    model = kb.compile_model(kb.dense_model([2, 8, 8, 8, 1], "sigmoid", seed=0), "sgd", loss="mse")
    logger = kb.GradientLogger()
    kb.train(model, X, y, epochs=10, batch_size=4, callbacks=[logger])
    return logger


class FakeHistory:
    def __init__(self, **history):
        self.history = history


# ---------------------------------------------------------------------------- plot_loss_curves


def test_loss_curves_one_line_per_run_with_labels_and_values():
    sgd, adam = np.linspace(1.0, 0.1, 5), np.geomspace(1.0, 1e-3, 8)
    fig = plotting.plot_loss_curves({"sgd": sgd, "adam": FakeHistory(loss=list(adam))})
    assert isinstance(fig, matplotlib.figure.Figure)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["sgd", "adam"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3, 4, 5])
    np.testing.assert_allclose(lines[0].get_ydata(), sgd)
    np.testing.assert_allclose(lines[1].get_ydata(), adam)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "epoch"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "adam"]


def test_loss_curves_linear_scale_history_key_and_first_x():
    fig = plotting.plot_loss_curves(FakeHistory(loss=[3.0, 2.0], val_loss=[4.0, 0.0, -1.0]), log_scale=False, key="val_loss", first_x=0)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    assert ax.get_ylabel() == "val_loss"
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [4.0, 0.0, -1.0])


def test_loss_curves_log_scale_hides_non_positive_and_non_finite():
    fig = plotting.plot_loss_curves([1.0, 0.0, np.inf, 0.5])
    y = fig.axes[0].get_lines()[0].get_ydata()
    assert y[0] == 1.0 and y[3] == 0.5
    assert np.isnan(y[1]) and np.isnan(y[2])


def test_loss_curves_draws_into_given_ax():
    fig, (a, b) = plt.subplots(1, 2)
    out = plotting.plot_loss_curves([1.0, 0.5], ax=b)
    assert out is fig
    assert len(a.get_lines()) == 0 and len(b.get_lines()) == 1


@pytest.mark.parametrize(
    "runs, error, match",
    [
        ({}, ValueError, "runs"),
        ([], ValueError, "at least one loss"),
        (np.ones((3, 2)), ValueError, r"1-D.*\(3, 2\)"),
        ("loss", TypeError, "runs"),
        ({"sgd": ["a", "b"]}, TypeError, r"runs\['sgd'\]"),
        (FakeHistory(accuracy=[1.0]), ValueError, "'loss'"),
    ],
    ids=["empty-dict", "empty-array", "2d", "string", "strings", "history-without-loss"],
)
def test_loss_curves_bad_input(runs, error, match):
    with pytest.raises(error, match=match):
        plotting.plot_loss_curves(runs)


def test_bad_ax_and_flags():
    with pytest.raises(TypeError, match="`ax` must be a matplotlib Axes"):
        plotting.plot_loss_curves([1.0], ax="left")
    with pytest.raises(TypeError, match="log_scale"):
        plotting.plot_loss_curves([1.0], log_scale="yes")
    with pytest.raises(TypeError, match="first_x"):
        plotting.plot_loss_curves([1.0], first_x=0.5)


# ---------------------------------------------------------------------------- plot_gradient_norms


def test_gradient_norms_one_line_per_variable(xor_log):
    fig = plotting.plot_gradient_norms(xor_log)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias"]
    assert ax.get_yscale() == "log"
    for line, name in zip(lines, xor_log.names, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), xor_log.steps)
        np.testing.assert_allclose(line.get_ydata(), xor_log.stats[name]["norm"])
    np.testing.assert_array_equal(lines[0].get_xdata(), np.arange(30))
    # kernels solid, biases dashed; one colour per layer
    assert [line.get_linestyle() for line in lines] == ["-", "--", "-", "--"]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color() == lines[3].get_color()
    assert ax.get_xlabel() == "optimizer step"


def test_gradient_norms_other_stat_subset_and_loaded_log(xor_log, tmp_path):
    path = tmp_path / "log.npz"
    xor_log.to_npz(path)
    loaded = load_gradient_log(path)
    fig = plotting.plot_gradient_norms(loaded, stat="max_abs", variables="kernels", log_scale=False)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["dense_0/kernel", "dense_1/kernel"]
    np.testing.assert_allclose(lines[1].get_ydata(), xor_log.stats[xor_log.names[2]]["max_abs"])
    assert ax.get_yscale() == "linear"
    # a full name (e.g. "sequential/dense_1/bias") and a short one
    fig = plotting.plot_gradient_norms(xor_log, variables=[xor_log.names[3], "dense_0/kernel"])
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["dense_1/bias", "dense_0/kernel"]


def test_gradient_norms_bad_input(xor_log):
    with pytest.raises(TypeError, match="`log` must be a GradientLogger"):
        plotting.plot_gradient_norms({"norm": [1.0]})
    with pytest.raises(ValueError, match="no logged steps"):
        plotting.plot_gradient_norms(kb.GradientLogger())
    with pytest.raises(ValueError, match="`stat` must be one of"):
        plotting.plot_gradient_norms(xor_log, stat="median")
    with pytest.raises(ValueError, match="`variables` must name variables.*'dense_9/kernel'"):
        plotting.plot_gradient_norms(xor_log, variables=["dense_9/kernel"])
    with pytest.raises(ValueError, match="at least one variable"):
        plotting.plot_gradient_norms(xor_log, variables=[])


# ---------------------------------------------------------------------------- plot_gradient_profile


def test_gradient_profile_median_per_layer(xor_log, deep_log):
    fig = plotting.plot_gradient_profile({"xor": xor_log, "deep": deep_log})
    ax = fig.axes[0]
    xor_line, deep_line = ax.get_lines()
    assert (xor_line.get_label(), deep_line.get_label()) == ("xor", "deep")
    np.testing.assert_array_equal(xor_line.get_xdata(), [1, 2])
    np.testing.assert_array_equal(deep_line.get_xdata(), [1, 2, 3, 4])
    expected = [np.median(xor_log.stats[n]["norm"]) for n in (xor_log.names[0], xor_log.names[2])]
    np.testing.assert_allclose(xor_line.get_ydata(), expected)
    assert xor_line.get_marker() == "o"
    assert ax.get_yscale() == "log"
    # vanishing: in the sigmoid stack, the input-side kernel gets the smallest gradient
    deep = deep_line.get_ydata()
    assert deep[0] < deep[-1]


def test_gradient_profile_last_and_bad_input(xor_log):
    fig = plotting.plot_gradient_profile(xor_log, reduce="last", stat="update_ratio")
    expected = xor_log.stats[xor_log.names[2]]["update_ratio"][-1]
    assert fig.axes[0].get_lines()[0].get_ydata()[1] == pytest.approx(expected)
    assert fig.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="`reduce` must be one of"):
        plotting.plot_gradient_profile(xor_log, reduce="sum")
    with pytest.raises(ValueError, match="at least one log"):
        plotting.plot_gradient_profile({})
    with pytest.raises(TypeError, match="GradientLog objects.*'a'"):
        plotting.plot_gradient_profile({"a": [1.0, 2.0]})


# ---------------------------------------------------------------------------- issue 17, item 7


def test_update_ratio_axis_says_what_it_is_and_why_steps_are_missing(xor_log):
    # The axis said "gradient update_ratio"; the value is |w_after - w_before| / |w_before|, and it is
    # infinite at step 0 for the zero-initialised biases, which a log axis silently leaves out.
    ax = plotting.plot_gradient_norms(xor_log, stat="update_ratio").axes[0]
    assert "|Δw|/|w|" in ax.get_ylabel() and "gradient" not in ax.get_ylabel()
    assert np.isinf(xor_log.stats[xor_log.names[1]]["update_ratio"][0])  # dense_0/bias starts at zero
    assert "not drawn: 1 step(s) where it is not finite (|w| = 0, e.g. a zero-initialised bias)" in ax.get_title()
    # the gradient norm's axis names the norm; no note where every value is finite
    ax = plotting.plot_gradient_norms(xor_log).axes[0]
    assert ax.get_ylabel() == "gradient L2 norm |g|" and "\n" not in ax.get_title()
    assert plotting.plot_gradient_profile(xor_log, stat="update_ratio").axes[0].get_ylabel() == "median update ratio |Δw|/|w|"


def test_gradient_profile_ticks_are_layer_numbers(xor_log, deep_log):
    # Ticks fell at 1.25, 1.5, 1.75 between layers 1 and 2.
    for logs, depth in ((xor_log, 2), ({"xor": xor_log, "deep": deep_log}, 4)):
        fig = plotting.plot_gradient_profile(logs)
        fig.canvas.draw()
        ticks = fig.axes[0].get_xticks()
        assert list(ticks) == list(range(1, depth + 1))
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(k) for k in range(1, depth + 1)]


def _points_under_legend(ax):
    """How many drawn data points (line vertices, densified; scatter offsets) lie under the legend."""
    ax.figure.canvas.draw()
    box = ax.get_legend().get_window_extent()
    points = []
    for line in ax.get_lines():
        xy = line.get_xydata()
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        if len(xy):
            display = ax.transData.transform(xy)
            points.append(display if len(display) == 1 else np.vstack([np.linspace(a, b, 25) for a, b in zip(display[:-1], display[1:], strict=True)]))
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets())
        if offsets.size and len(offsets) < 1000:  # scatter markers, not a contour
            points.append(ax.transData.transform(offsets))
    xy = np.vstack(points)
    return int(np.sum((xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)))


def test_legends_stay_off_the_data(deep_log):
    # Legends sat on the data: a gradient-norm plot with many variables, the decision boundary's
    # legend fixed at the upper centre.
    ax = plotting.plot_gradient_norms(deep_log).axes[0]
    assert _points_under_legend(ax) == 0
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the axes
    X = np.array([[0.5, 0.95], [0.45, 0.9], [0.55, 0.9], [0.5, 0.05]])
    y = np.array([[1.0], [1.0], [0.0], [0.0]])
    ax = plotting.plot_decision_boundary(lambda grid: grid[:, 1:] - grid[:, :1] + 0.4, X, y).axes[0]
    assert _points_under_legend(ax) == 0
    ax = plotting.plot_loss_curves({f"run {k}": np.geomspace(1, 10.0 ** -(k + 1), 50) for k in range(6)}).axes[0]
    assert _points_under_legend(ax) == 0


# ---------------------------------------------------------------------------- plot_decision_boundary


def _boundary_vertices(ax):
    """Vertices of the black decision-boundary contour."""
    from matplotlib.contour import ContourSet

    sets = [c for c in ax.collections if isinstance(c, ContourSet) and not c.filled]
    assert len(sets) == 1
    return np.vstack([p.vertices for p in sets[0].get_paths() if len(p.vertices)])


def test_decision_boundary_of_a_callable():
    X, y = kb.xor_data()
    fig = plotting.plot_decision_boundary(lambda g: g[:, 0], X, y, resolution=51)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the panel and its colour bar
    # output = x1, so the 0.5 level is the vertical line x1 = 0.5
    vertices = _boundary_vertices(ax)
    np.testing.assert_allclose(vertices[:, 0], 0.5, atol=1e-9)
    assert vertices[:, 1].min() == pytest.approx(-0.5) and vertices[:, 1].max() == pytest.approx(1.5)
    scatters = [c for c in ax.collections if c.get_offsets().shape[0] == 2]
    offsets = sorted(map(tuple, np.vstack([s.get_offsets() for s in scatters]).tolist()))
    assert len(scatters) == 2
    assert sorted(map(tuple, scatters[0].get_offsets().tolist())) == [(0.0, 0.0), (1.0, 1.0)]  # class 0 first
    assert offsets == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    assert ax.get_xlim() == (-0.5, 1.5) and ax.get_ylim() == (-0.5, 1.5)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["class 0 (target <= 0.5)", "class 1 (target > 0.5)"]


def test_decision_boundary_keras_and_numpy_models_agree():
    X, y = kb.xor_data()
    model = kb.xor_model(seed=3)
    model.set_weights([w * 4 for w in model.get_weights()])  # a sharper output, so the 0.5 level is crossed
    twin = NumpyMLP.from_keras(model)
    fig1 = plotting.plot_decision_boundary(model, X, y, resolution=40, colorbar=False)
    fig2 = plotting.plot_decision_boundary(twin, X, y, resolution=40, colorbar=False)
    assert len(fig1.axes) == 1
    v1, v2 = _boundary_vertices(fig1.axes[0]), _boundary_vertices(fig2.axes[0])
    assert v1.shape == v2.shape and len(v1) > 10
    np.testing.assert_allclose(v1, v2, atol=1e-4)
    # and the boundary really is where the model outputs 0.5
    out = twin(v1)
    np.testing.assert_allclose(out, 0.5, atol=0.02)


@pytest.mark.parametrize(
    "model, X, y, error, match",
    [
        ("net", None, None, TypeError, "`model` must be a Keras model"),
        (lambda g: g, None, None, ValueError, r"one prediction per point.*\(40000, 2\)"),
        (lambda g: g[:, 0], np.zeros((4, 3)), None, ValueError, r"`X` must have shape \(n_samples, 2\).*\(4, 3\)"),
        (lambda g: g[:, 0], None, np.zeros(3), ValueError, r"`y` must hold one target per row.*\(3, 1\)"),
        (lambda g: g[:, 0], [["a", "b"]], None, TypeError, "`X` must hold numbers"),
    ],
    ids=["not-callable", "bad-output", "three-inputs", "short-y", "strings"],
)
def test_decision_boundary_bad_input(model, X, y, error, match):
    X0, y0 = kb.xor_data()
    with pytest.raises(error, match=match):
        plotting.plot_decision_boundary(model, X0 if X is None else X, y0 if y is None else y)


def test_decision_boundary_bad_resolution():
    X, y = kb.xor_data()
    with pytest.raises(ValueError, match="resolution"):
        plotting.plot_decision_boundary(lambda g: g[:, 0], X, y, resolution=1)


# ---------------------------------------------------------------------------- loss surface


def test_weights_to_path_from_snapshots_and_get_weights():
    X, y = kb.linear_data(n_samples=20)
    model = kb.compile_model(kb.linear_model(seed=0), "sgd")
    initial = model.get_weights()
    logger = kb.GradientLogger(snapshots=True)
    kb.train(model, X, y, epochs=3, batch_size=10, callbacks=[logger])
    path = plotting.weights_to_path(logger.weights())
    assert path.shape == (6, 2)
    np.testing.assert_allclose(path[0], [initial[0][0, 0], initial[1][0]])
    assert not np.allclose(path[1], path[0])
    per_epoch = plotting.weights_to_path([initial, model.get_weights()])
    np.testing.assert_allclose(per_epoch[-1], [model.get_weights()[0][0, 0], model.get_weights()[1][0]])
    with pytest.raises(ValueError, match=r"\(n_steps, 1, 1\).*\(6, 2, 1\)"):
        plotting.weights_to_path([np.zeros((6, 2, 1)), np.zeros((6, 1))])
    with pytest.raises(ValueError, match=r"`weights\[0\]` must be a \[kernel"):
        plotting.weights_to_path([[np.zeros((2, 1)), np.zeros(1)]])
    with pytest.raises(TypeError, match="`weights` must be a list"):
        plotting.weights_to_path(3.0)


def test_loss_surface_marks_least_squares_and_draws_paths():
    X, y = kb.linear_data()
    paths = {"sgd": np.array([[0.0, 0.0], [0.5, 0.8], [1.4, 1.3]]), "adam": [[-1.0, 0.0], [1.9, 1.0]]}
    fig = plotting.plot_loss_surface(X, y, paths)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    (w_star,), b_star = least_squares(X, y)
    star = lines["least squares"]
    assert star.get_marker() == "*"
    np.testing.assert_allclose([star.get_xdata()[0], star.get_ydata()[0]], [w_star, b_star])
    assert w_star == pytest.approx(1.954, abs=1e-3) and b_star == pytest.approx(1.0215, abs=1e-3)
    np.testing.assert_array_equal(lines["sgd"].get_xdata(), [0.0, 0.5, 1.4])
    np.testing.assert_array_equal(lines["adam"].get_ydata(), [0.0, 1.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sgd", "adam", "least squares"]
    # the view covers every path and the optimum
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert x0 < -1.0 and x1 > w_star and y0 < 0.0 and y1 > 1.3
    # contour levels: log-spaced, starting just above the least-squares loss
    from matplotlib.contour import ContourSet

    (contours,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    levels = np.asarray(contours.levels)
    best = float(np.mean((w_star * X + b_star - y) ** 2))
    assert levels[0] == pytest.approx(best * 1.05)
    np.testing.assert_allclose(np.diff(np.log(levels)), np.log(levels[1] / levels[0]), rtol=1e-9)


def test_mse_grid_matches_direct_computation():
    X, y = kb.linear_data(n_samples=30)
    W, B = np.meshgrid([-1.0, 0.5, 2.0], [0.0, 1.0])
    direct = np.array([[np.mean((w * X + b - y) ** 2) for w, b in zip(wr, br, strict=True)] for wr, br in zip(W, B, strict=True)])
    np.testing.assert_allclose(_mse_grid(X[:, 0], y[:, 0], W, B), direct, rtol=1e-12)


def test_loss_surface_ranges_and_bad_input():
    X, y = kb.linear_data(n_samples=20)
    fig = plotting.plot_loss_surface(X, y, w_range=(0, 3), b_range=(-1, 2), resolution=20)
    assert fig.axes[0].get_xlim() == (0.0, 3.0) and fig.axes[0].get_ylim() == (-1.0, 2.0)
    with pytest.raises(TypeError, match="`paths` must be None or a dict"):
        plotting.plot_loss_surface(X, y, [[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"`paths\['sgd'\]` must have shape \(n_steps, 2\).*\(2, 3\)"):
        plotting.plot_loss_surface(X, y, {"sgd": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"`paths\['sgd'\]` must be finite"):
        plotting.plot_loss_surface(X, y, {"sgd": [[0.0, np.nan]]})
    with pytest.raises(ValueError, match="`X` has 2 features"):
        plotting.plot_loss_surface(np.zeros((20, 2)), y)
    with pytest.raises(ValueError, match="same number of rows"):
        plotting.plot_loss_surface(X, y[:5])
    with pytest.raises(ValueError, match=r"`w_range` must be \(low, high\)"):
        plotting.plot_loss_surface(X, y, w_range=(2, 1))


# ---------------------------------------------------------------------------- twin comparison


def test_twin_comparison_single_run():
    keras_losses = FakeHistory(loss=[1.0, 0.5, 0.25, 0.125])
    numpy_losses = np.array([1.0, 0.5 + 1e-6, 0.25, 0.125 - 1e-7])
    fig = plotting.plot_twin_comparison(keras_losses, numpy_losses)
    top, bottom = fig.axes
    assert [line.get_label() for line in top.get_lines()] == ["Keras", "NumPy twin"]
    np.testing.assert_allclose(top.get_lines()[1].get_ydata(), numpy_losses)
    assert top.get_lines()[1].get_linestyle() == "--"
    assert top.get_yscale() == "log" and bottom.get_yscale() == "log"
    (diff,) = bottom.get_lines()
    np.testing.assert_allclose(diff.get_ydata(), [np.nan, 1e-6, np.nan, 1e-7], rtol=1e-6)  # zero is not drawn
    assert "1e-06" in bottom.get_title()


def test_twin_comparison_several_runs_identical_and_given_axes():
    fig, axes = plt.subplots(2, 1)
    runs = {"sgd": [1.0, 0.5], "adam": [1.0, 0.25]}
    out = plotting.plot_twin_comparison(runs, dict(runs), axes=axes, log_scale=False)
    assert out is fig
    assert [line.get_label() for line in axes[0].get_lines()] == ["sgd Keras", "sgd NumPy twin", "adam Keras", "adam NumPy twin"]
    assert axes[0].get_yscale() == "linear"
    assert [line.get_label() for line in axes[1].get_lines()] == ["sgd", "adam"]
    assert "identical" in axes[1].get_title()
    # each twin is drawn in its run's colour
    lines = axes[0].get_lines()
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()


@pytest.mark.parametrize(
    "keras_losses, numpy_losses, axes, error, match",
    [
        ([1.0, 0.5], [1.0], None, ValueError, "same length.*Received 2 and 1"),
        ({"sgd": [1.0]}, [1.0], None, TypeError, "both be dicts"),
        ({"sgd": [1.0]}, {"adam": [1.0]}, None, ValueError, r"same labels.*\['sgd'\] and \['adam'\]"),
        ({"sgd": [1.0, 2.0]}, {"sgd": [1.0]}, None, ValueError, r"keras_losses\['sgd'\]"),
        ([1.0], [], None, ValueError, "at least one loss"),
        ([1.0], [1.0], "both", TypeError, "`axes` must be a pair"),
    ],
    ids=["lengths", "dict-and-array", "labels", "dict-lengths", "empty", "bad-axes"],
)
def test_twin_comparison_bad_input(keras_losses, numpy_losses, axes, error, match):
    with pytest.raises(error, match=match):
        plotting.plot_twin_comparison(keras_losses, numpy_losses, axes=axes)


# ---------------------------------------------------------------------------- scripts/make_figures.py


def _load_script():
    spec = importlib.util.spec_from_file_location("make_figures", os.path.join(ROOT, "scripts", "make_figures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_figures_writes_png(tmp_path, capsys):
    script = _load_script()
    out = tmp_path / "sub" / "norms.png"
    assert script.main(["--out", str(out), "--epochs", "20"]) == 0
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--epochs", "0"])
    assert "--epochs must be a positive integer" in capsys.readouterr().err


def test_readme_figure_is_committed():
    path = os.path.join(ROOT, "docs", "gradient_norms.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_comparison_draws_a_report():
    report = run_compare("xor", "adam", epochs=4)
    fig = plotting.plot_comparison(report)
    ax_loss, ax_diff = fig.axes
    keras_line, twin_line = ax_loss.get_lines()
    np.testing.assert_array_equal(keras_line.get_ydata(), report.keras_losses)
    np.testing.assert_array_equal(twin_line.get_ydata(), report.twin_losses)
    labels = [line.get_label() for line in ax_diff.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["teacher-forced gradient", "teacher-forced weights", "free-running weights"]
    gradient = ax_diff.get_lines()[0].get_ydata()
    expected = report.teacher["gradient_rel"].max(axis=1)
    np.testing.assert_array_equal(np.nan_to_num(gradient), np.where(expected > 0, expected, 0))
    # the tolerance lines are drawn at the report's tolerances
    levels = sorted({line.get_ydata()[0] for line in ax_diff.get_lines() if line.get_linestyle() == ":"})
    assert levels == sorted({report.tolerances["gradient"], report.tolerances["weights"]})
    assert ax_diff.get_yscale() == "log"
    # the optimizer's class name, without its settings
    assert ax_loss.get_title() == f"Adam, {report.loss}, float32: ok" and "(" not in ax_loss.get_title()
    with pytest.raises(TypeError, match="ComparisonReport"):
        plotting.plot_comparison({"ok": True})


# ---------------------------------------------------------------------------- the package


def test_every_public_name_is_in_the_package_and_its_subject_module():
    modules = {
        curves: ["plot_gradient_norms", "plot_gradient_profile", "plot_loss_curves"],
        surfaces: ["plot_decision_boundary", "plot_loss_surface", "weights_to_path"],
        twin: ["plot_comparison", "plot_twin_comparison"],
        curvature: ["plot_curvature"],
        noise: ["plot_gradient_noise"],
    }
    assert sorted(plotting.__all__) == sorted(name for names in modules.values() for name in names)
    for module, names in modules.items():
        for name in names:
            assert getattr(plotting, name) is getattr(module, name)
            assert getattr(kb.plotting, name) is getattr(module, name)


def test_plot_gradient_norms_draws_applied_norms_and_the_clip_threshold():
    X = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], "float32")
    y = np.array([[10], [20], [30], [40]], "float32")
    model = kb.compile_model(kb.linear_model(2, seed=0), keras.optimizers.SGD(1e-3, clipnorm=1.0))
    logger = kb.GradientLogger()
    kb.train(model, X, y, epochs=5, batch_size=4, callbacks=[logger])
    fig = plot_gradient_norms(logger, applied=True)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    kernel = [name for name in lines if name.endswith("kernel")][0]
    np.testing.assert_array_equal(lines[kernel].get_ydata(), logger.stats[logger.names[0]]["norm"])
    np.testing.assert_allclose(lines[kernel + " applied"].get_ydata(), logger.stats[logger.names[0]]["applied_norm"])
    assert np.all(logger.stats[logger.names[0]]["applied_norm"] <= 1.0 + 1e-6)  # clipped to the threshold
    assert lines["clipnorm 1"].get_ydata()[0] == 1.0
    with pytest.raises(ValueError, match="applied=True"):
        plot_gradient_norms(logger, stat="max_abs", applied=True)
    plt.close(fig)
