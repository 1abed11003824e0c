"""The NumPy twin of a Keras Dense network: activations, losses, `NumpyMLP`, optimizers, gradient check.

Pure NumPy: importing this package does not import Keras or TensorFlow. Only the functions that
read Keras objects (`NumpyMLP.from_keras`, `optimizer_from_keras`, `state_from_keras`,
`loss_from_keras`, `layers_from_keras`, and `get_loss` / `get_optimizer` given a Keras object)
import Keras, when they are called.

Modules:
    activations      activations beside their derivatives; the registry `ACTIVATIONS`
    losses           MSE and binary cross-entropy with their gradients; the registry `LOSSES`
    layers           the Dense layer: forward beside backward, Glorot-uniform kernels
    mlp              `NumpyMLP`: the layers stacked, backpropagation by hand, `fit`
    optimizers       SGD, Adam, RMSprop as pure updates; the registry `OPTIMIZERS`
    optimizer_state  the optimizers' state NamedTuples and the checks of `apply`
    rounding         how Keras rounds Python-float hyperparameters (float64 parity)
    from_keras       the twin of a Keras model, optimizer, optimizer state or loss
    gradcheck        `gradient_check`: backprop against central differences

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
    Activation,
    get_activation,
    linear,
    linear_derivative,
    relu,
    relu_derivative,
    sigmoid,
    sigmoid_derivative,
    tanh,
    tanh_derivative,
)
from kerasbp.reference.from_keras import (
    get_loss,
    get_optimizer,
    layers_from_keras,
    loss_from_keras,
    optimizer_from_keras,
    state_from_keras,
)
from kerasbp.reference.gradcheck import gradient_check
from kerasbp.reference.layers import LayerCache
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
from kerasbp.reference.optimizers import OPTIMIZERS, SGD, Adam, OptimizerSpec, RMSprop

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "OPTIMIZERS",
    "Activation",
    "Adam",
    "AdamState",
    "Backward",
    "BinaryCrossentropy",
    "LayerCache",
    "LossSpec",
    "MeanSquaredError",
    "NumpyMLP",
    "OptimizerSpec",
    "RMSprop",
    "RMSpropState",
    "SGD",
    "SGDState",
    "align_targets",
    "binary_crossentropy",
    "binary_crossentropy_gradient",
    "get_activation",
    "get_loss",
    "get_optimizer",
    "gradient_check",
    "layers_from_keras",
    "linear",
    "linear_derivative",
    "loss_from_keras",
    "mse",
    "mse_gradient",
    "optimizer_from_keras",
    "relu",
    "relu_derivative",
    "sigmoid",
    "sigmoid_derivative",
    "state_from_keras",
    "tanh",
    "tanh_derivative",
]
