"""The NumPy twin of a Keras Dense network: activations, losses, `NumpyMLP`, optimizers, gradient check.

Pure NumPy: importing this package does not import Keras or TensorFlow. Only the functions that
read Keras objects (`NumpyMLP.from_keras`, `optimizer_from_keras`, `state_from_keras`,
`loss_from_keras`) import Keras, when they are called.

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
from kerasbp.reference.gradcheck import gradient_check
from kerasbp.reference.losses import (
    BinaryCrossentropy,
    MeanSquaredError,
    align_targets,
    binary_crossentropy,
    binary_crossentropy_gradient,
    get_loss,
    loss_from_keras,
    mse,
    mse_gradient,
)
from kerasbp.reference.mlp import Backward, LayerCache, NumpyMLP
from kerasbp.reference.optimizers import (
    SGD,
    Adam,
    AdamState,
    RMSprop,
    RMSpropState,
    SGDState,
    get_optimizer,
    optimizer_from_keras,
    state_from_keras,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Adam",
    "AdamState",
    "Backward",
    "BinaryCrossentropy",
    "LayerCache",
    "MeanSquaredError",
    "NumpyMLP",
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
