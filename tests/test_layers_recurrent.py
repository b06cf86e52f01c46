"""Recurrent cells: NumPy recurrences from the equations, parity with
keras.layers.SimpleRNN/LSTM/GRU under shared weights, gradients, export."""

import keras
import numpy as np
import pytest
from layer_checks import (
    Case,
    assert_close,
    case_forward,
    case_gradient,
    case_roundtrip,
    case_shape_error,
    case_tflite,
    np_sigmoid,
    rand,
    randomize_weights,
    to_numpy,
)

from layers import ElmanCell, GRUCell, LSTMCell


def _weights(rnn):
    cell = rnn.cell
    return np.asarray(cell.kernel), np.asarray(cell.recurrent_kernel), np.asarray(cell.bias)


def elman_ref(rnn, xs):
    W, U, b = _weights(rnn)
    x = xs[0]
    h = np.zeros((x.shape[0], U.shape[0]))
    out = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ W + h @ U + b)
        out.append(h)
    return np.stack(out, 1)


def lstm_ref(rnn, xs):
    W, U, b = _weights(rnn)
    x = xs[0]
    n = U.shape[0]
    h = c = np.zeros((x.shape[0], n))
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ W + h @ U + b
        i, f, g, o = (
            np_sigmoid(z[:, :n]),
            np_sigmoid(z[:, n : 2 * n]),
            np.tanh(z[:, 2 * n : 3 * n]),
            np_sigmoid(z[:, 3 * n :]),
        )
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def gru_ref(rnn, xs):
    W, U, b = _weights(rnn)
    x = xs[0]
    n = U.shape[0]
    h = np.zeros((x.shape[0], n))
    out = []
    for t in range(x.shape[1]):
        xp, hp = x[:, t] @ W + b[0], h @ U + b[1]
        z = np_sigmoid(xp[:, :n] + hp[:, :n])
        r = np_sigmoid(xp[:, n : 2 * n] + hp[:, n : 2 * n])
        cand = np.tanh(xp[:, 2 * n :] + r * hp[:, 2 * n :])
        h = z * h + (1 - z) * cand
        out.append(h)
    return np.stack(out, 1)


X = rand(2, 4, 3, seed=21)
XG = rand(1, 3, 2, seed=22)
BAD = (rand(2, 5, seed=23), r"Cell expects a 2-D input per time step \(batch, features\)")


def rnn(cell_cls, unroll=False):
    return lambda d: keras.layers.RNN(cell_cls(3, dtype=d), return_sequences=True, unroll=unroll, dtype=d)


# TFLite: the symbolic while-loop keeps a TensorList whose element shape holds
# the unknown batch size, which the converter cannot lower to builtins
# ("TensorListReserve requires element_shape to be static"). The exported
# tiny model therefore unrolls the fixed-length sequence; the cell itself is
# the same.
CASES = [
    Case("elman", rnn(ElmanCell), X, elman_ref, bad=BAD, grad_inputs=[XG], tflite_make=rnn(ElmanCell, True)),
    Case("lstm", rnn(LSTMCell), X, lstm_ref, bad=BAD, grad_inputs=[XG], tflite_make=rnn(LSTMCell, True)),
    Case("gru", rnn(GRUCell), X, gru_ref, bad=BAD, grad_inputs=[XG], tflite_make=rnn(GRUCell, True)),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_cell_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_cell_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_cell_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_cell_tflite(case, tmp_path):
    case_tflite(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_cell_shape_error(case):
    case_shape_error(case)


@pytest.mark.parametrize(
    "cell_cls,keras_cls",
    [(ElmanCell, keras.layers.SimpleRNN), (LSTMCell, keras.layers.LSTM), (GRUCell, keras.layers.GRU)],
)
def test_cell_matches_keras_layer(cell_cls, keras_cls):
    x = rand(2, 5, 3, seed=24)
    ours = keras.layers.RNN(cell_cls(4), return_sequences=True, return_state=True)
    ours(x)
    randomize_weights(ours, seed=25)
    reference = keras_cls(4, return_sequences=True, return_state=True)
    reference(x)
    reference.set_weights(ours.get_weights())
    for got, want in zip(to_numpy(ours(x)), to_numpy(reference(x))):
        assert_close(got, want, atol=1e-5)
