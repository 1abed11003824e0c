"""The NumPy twin of a Keras Dense network: activations, losses, `NumpyMLP`, optimizers, gradient check.

Pure NumPy: importing this package does not import Keras or TensorFlow. Only the functions that
read Keras objects (`NumpyMLP.from_keras`, `optimizer_from_keras`, `state_from_keras`,
`loss_from_keras`, `layers_from_keras`, and `get_loss` / `get_optimizer` given a Keras object)
import Keras, when they are called.

Modules:
    activations      activations beside their derivatives; the registry `ACTIVATIONS`
    losses           MSE and binary cross-entropy functions; the registry `LOSSES`
    loss_objects     every loss with sample weights; class weights; the logits path
    regularizers     L1, L2, L1L2
    layers           Dense, BatchNormalization, Dropout, Activation: forward beside backward
    mlp              `NumpyMLP`: the layers stacked, backpropagation by hand, `fit`
    optimizer_base   clipping, weight decay, EMA, gradient accumulation, schedules: for all
    optimizers       SGD, Adam, AdamW, RMSprop; the registry `OPTIMIZERS` (and `REFUSED`)
    optimizers_adaptive  Adagrad, Adadelta, Adamax, Nadam, Ftrl
    optimizers_sign  Lion, Lamb, Adafactor
    schedules        the learning-rate schedules of `keras.optimizers.schedules`
    optimizer_state  the optimizers' state NamedTuples and the checks of `apply`
    rounding         how Keras rounds Python-float hyperparameters (float64 parity)
    configured       `Configured`: repr, equality and hash from `get_config()`
    from_keras       the twin of a Keras model, optimizer, optimizer state or loss
    gradcheck        `gradient_check`: backprop against central differences
    curvature        per-example gradients; the exact Hessian (R-operator); flatten/unflatten

Example:
    >>> from kerasbp.reference import NumpyMLP, Adam
    >>> mlp = NumpyMLP.from_sizes([2, 4, 1], "sigmoid", seed=0, dtype="float64")
    >>> X, y = [[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 0]
    >>> losses = mlp.fit(X, y, Adam(learning_rate=0.1), epochs=300, batch_size=4)
    >>> bool(losses[-1] < losses[0])
    True
"""

from kerasbp.reference.activations import (
    ACTIVATIONS,
    get_activation,
    linear,
    linear_derivative,
    relu,
    relu_derivative,
    sigmoid,
    sigmoid_derivative,
    softmax,
    tanh,
    tanh_derivative,
)
from kerasbp.reference.activations import Activation as ActivationFunction
from kerasbp.reference.from_keras import (
    get_loss,
    get_optimizer,
    layers_from_keras,
    loss_from_keras,
    optimizer_from_keras,
    schedule_from_keras,
    state_from_keras,
)
from kerasbp.reference.curvature import flatten_params, hessian_vector_product, unflatten_params
from kerasbp.reference.gradcheck import GradientCheck, gradient_check
from kerasbp.reference.layers import LAYERS, Activation, BatchNormalization, Dense, Dropout, LayerCache
from kerasbp.reference.loss_objects import (
    CategoricalCrossentropy,
    Huber,
    Loss,
    MeanAbsoluteError,
    SparseCategoricalCrossentropy,
    class_weight_to_sample_weight,
)
from kerasbp.reference.losses import (
    LOSSES,
    BinaryCrossentropy,
    LossSpec,
    MeanSquaredError,
    align_targets,
    binary_crossentropy,
    binary_crossentropy_gradient,
    mse,
    mse_gradient,
)
from kerasbp.reference.mlp import Backward, NumpyMLP
from kerasbp.reference.optimizer_state import AdamState, RMSpropState, SGDState
from kerasbp.reference.optimizers import (
    OPTIMIZERS,
    REFUSED,
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Ftrl,
    Lamb,
    Lion,
    Nadam,
    OptimizerSpec,
    RMSprop,
)
from kerasbp.reference.regularizers import L1, L1L2, L2
from kerasbp.reference.schedules import SCHEDULES

__all__ = sorted(name for name in dir() if not name.startswith("_") and name not in ("activations", "curvature", "from_keras", "gradcheck", "layers", "loss_objects", "losses", "mlp", "optimizer_base", "optimizer_state", "optimizers", "optimizers_adaptive", "optimizers_sign", "regularizers", "rounding", "schedules"))
