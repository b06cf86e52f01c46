"""Test-side helpers shared by tests/test_layers_*.py and tests/test_losses_*.py.

Export goes through ``core.export`` (SavedModel -> TFLite -> LiteRT signature
runner), the same path the apps use.
"""

import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from core.export import convert_to_tflite, export_saved_model, run_saved_model, run_tflite


def rng(seed=0):
    return np.random.default_rng(seed)


def rand(*shape, seed=0, low=-1.0, high=1.0, dtype="float32"):
    """Random non-zero test input (uniform in [low, high))."""
    return rng(seed).uniform(low, high, size=shape).astype(dtype)


def randomize_weights(layer, seed=0, scale=0.5):
    """Give every weight a random non-trivial value (variances stay positive)
    so that references cannot pass by accident on zeros/ones."""
    r = rng(seed)
    values = []
    for w in layer.weights:
        shape = tuple(w.shape)
        if "/ref_" in w.path:  # reference statistics (VirtualBatchNormalization) are set, not random
            values.append(np.asarray(w))
        elif "variance" in w.path:
            values.append(r.uniform(0.5, 1.5, size=shape))
        else:
            values.append(r.normal(0.0, scale, size=shape))
    layer.set_weights([v.astype(w.dtype) for v, w in zip(values, layer.weights)])


# ----------------------------------------------------------------- numpy refs
def np_conv2d(x, kernel, bias=None, strides=1, padding="same", groups=1):
    """NHWC conv (cross-correlation) with TF's 'same' padding convention."""
    n, h, w, c = x.shape
    kh, kw, cin_g, cout = kernel.shape
    if padding == "same":
        oh, ow = -(-h // strides), -(-w // strides)
        ph = max((oh - 1) * strides + kh - h, 0)
        pw = max((ow - 1) * strides + kw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // strides + 1, (w - kw) // strides + 1
    out = np.zeros((n, oh, ow, cout), dtype=np.float64)
    gout = cout // groups
    for g in range(groups):
        xs = x[..., g * cin_g:(g + 1) * cin_g]
        ks = kernel[..., g * gout:(g + 1) * gout]
        for i in range(oh):
            for j in range(ow):
                patch = xs[:, i * strides:i * strides + kh, j * strides:j * strides + kw, :]
                out[:, i, j, g * gout:(g + 1) * gout] = np.tensordot(patch, ks, axes=([1, 2, 3], [0, 1, 2]))
    if bias is not None:
        out = out + bias
    return out


def np_batchnorm(x, bn):
    """Inference-mode batch norm from the layer's moving statistics."""
    g, b, m, v = (np.asarray(w) for w in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return (x - m) / np.sqrt(v + bn.epsilon) * g + b


def np_relu(x):
    return np.maximum(x, 0.0)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_maxpool(x, pool, strides, padding="valid"):
    n, h, w, c = x.shape
    if padding == "same":
        oh, ow = -(-h // strides), -(-w // strides)
        ph = max((oh - 1) * strides + pool - h, 0)
        pw = max((ow - 1) * strides + pool - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), constant_values=-np.inf)
    else:
        oh, ow = (h - pool) // strides + 1, (w - pool) // strides + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * strides:i * strides + pool, j * strides:j * strides + pool].max(axis=(1, 2))
    return out


# ----------------------------------------------------------------- checks
def as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def call_layer(layer, inputs, **kwargs):
    return layer(inputs[0] if len(inputs) == 1 else inputs, **kwargs)


def tiny_model(layer, inputs, **call_kwargs):
    """Functional model ``inputs -> layer`` with inputs named x0, x1, ..."""
    inputs = as_list(inputs)
    tensors = [keras.Input(shape=np.shape(x)[1:], dtype=str(np.asarray(x).dtype), name=f"x{i}")
               for i, x in enumerate(inputs)]
    out = call_layer(layer, tensors, **call_kwargs)
    return keras.Model(tensors, out)


def to_numpy(y):
    if isinstance(y, (list, tuple)):
        return [to_numpy(v) for v in y]
    return keras.ops.convert_to_numpy(y)


def assert_close(actual, expected, atol=1e-5, rtol=1e-5):
    for a, e in zip(as_list(actual), as_list(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64), atol=atol, rtol=rtol)


def _strip_names(config):
    # Nested sublayers (an RNN's cell) get fresh unique names on from_config.
    if isinstance(config, dict):
        return {k: _strip_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, list):
        return [_strip_names(v) for v in config]
    return config


def check_config_roundtrip(layer, inputs, atol=1e-6, **call_kwargs):
    """from_config(get_config()) + the same weights gives the same outputs."""
    inputs = as_list(inputs)
    expected = to_numpy(call_layer(layer, inputs, **call_kwargs))
    config = layer.get_config()
    clone = type(layer).from_config(copy.deepcopy(config))  # RNN.from_config pops "cell" from its argument
    call_layer(clone, inputs, **call_kwargs)  # build
    clone.set_weights(layer.get_weights())
    assert _strip_names(clone.get_config()) == _strip_names(config)
    assert_close(to_numpy(call_layer(clone, inputs, **call_kwargs)), expected, atol=atol)
    # Registered under the suite package, so deserialization by name works.
    cls = type(getattr(layer, "cell", layer))  # for keras.layers.RNN, the suite's cell
    name = keras.saving.get_registered_name(cls)
    assert name == f"suite>{cls.__name__}", name


def check_save_load(model, inputs, tmp_path, atol=1e-6):
    inputs = as_list(inputs)
    expected = to_numpy(model(inputs if len(inputs) > 1 else inputs[0], training=False))
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    got = to_numpy(loaded(inputs if len(inputs) > 1 else inputs[0], training=False))
    assert_close(got, expected, atol=atol)


def check_tflite(model, inputs, tmp_path, atol=1e-4):
    """SavedModel export, TFLite conversion, and parity with Keras."""
    inputs = as_list(inputs)
    expected = as_list(to_numpy(model(inputs if len(inputs) > 1 else inputs[0], training=False)))
    feed = {f"x{i}": x for i, x in enumerate(inputs)}
    out_names = [f"y{i}" for i in range(len(expected))]
    sm_dir = os.path.join(str(tmp_path), "sm")
    export_saved_model(model, sm_dir, input_names=list(feed), output_names=out_names)
    saved = run_saved_model(sm_dir, feed)
    assert_close([saved[n] for n in out_names], expected, atol=atol)
    tfl = os.path.join(str(tmp_path), "m.tflite")
    convert_to_tflite(sm_dir, tfl)
    got = run_tflite(tfl, feed)
    assert_close([got[n] for n in out_names], expected, atol=atol)


def gradient_error(fn, inputs, delta=1e-6):
    """Largest |analytic - central finite difference| over the Jacobian of fn
    with respect to each of ``inputs`` (float64 arrays)."""
    xs = [tf.constant(np.asarray(x, np.float64)) for x in as_list(inputs)]
    theoretical, numerical = tf.test.compute_gradient(fn, xs, delta=delta)
    return max(float(np.max(np.abs(t - n))) if t.size else 0.0 for t, n in zip(theoretical, numerical))


# ----------------------------------------------------------------- table-driven layer checks
class Case:
    """One layer configuration and how to check it.

    make(dtype) -> layer; inputs: list of arrays; ref(layer, inputs_f64) ->
    expected output(s) from the paper's formula; grad: indices of inputs to
    differentiate in float64 (empty to skip, with ``grad_reason``); tflite:
    True or a string saying why TFLite cannot hold the layer; bad: (input
    arrays, regex) for the shape-error check.
    """

    def __init__(self, name, make, inputs, ref, grad=(0,), grad_reason=None, tflite=True, bad=None,
                 atol=1e-5, grad_atol=1e-6, call_kwargs=None, grad_inputs=None, tflite_make=None,
                 grad_output=None):
        self.name, self.make, self.inputs, self.ref = name, make, as_list(inputs), ref
        self.grad, self.grad_reason, self.tflite, self.bad = tuple(grad), grad_reason, tflite, bad
        self.atol, self.grad_atol = atol, grad_atol
        self.call_kwargs = call_kwargs or {}
        self.grad_inputs = grad_inputs  # optional smaller inputs for the (O(n)) finite differences
        self.grad_output = grad_output  # which output to differentiate, for multi-output layers
        self.tflite_make = tflite_make or make  # a TFLite-friendly variant of the same layer, if needed

    def __repr__(self):
        return self.name

    def built(self, dtype="float32", inputs=None, seed=1):
        layer = self.make(dtype)
        inputs = self.inputs if inputs is None else inputs
        call_layer(layer, [cast_float(x, dtype) for x in inputs], **self.call_kwargs)
        randomize_weights_if_any(layer, seed)
        return layer


def cast_float(x, dtype):
    x = np.asarray(x)
    return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x


def randomize_weights_if_any(layer, seed):
    if layer.weights:
        randomize_weights(layer, seed)


def case_forward(case):
    layer = case.built()
    got = to_numpy(call_layer(layer, case.inputs, **case.call_kwargs))
    expected = case.ref(layer, [cast_float(x, np.float64) for x in case.inputs])
    assert_close(got, expected, atol=case.atol, rtol=1e-4)


def case_gradient(case):
    if not case.grad:
        assert case.grad_reason, f"{case.name}: gradient check skipped without a reason"
        return
    inputs = [cast_float(x, "float64") for x in (case.grad_inputs or case.inputs)]
    layer = case.built("float64", inputs)
    grad_idx = list(case.grad)

    def fn(*diff):
        xs = list(inputs)
        for i, v in zip(grad_idx, diff):
            xs[i] = v
        out = call_layer(layer, [keras.ops.convert_to_tensor(x) for x in xs], **case.call_kwargs)
        return out if case.grad_output is None else out[case.grad_output]

    err = gradient_error(fn, [inputs[i] for i in grad_idx])
    assert err < case.grad_atol, f"{case.name}: max |analytic - numeric| = {err}"


def case_roundtrip(case, tmp_path):
    layer = case.built()
    check_config_roundtrip(layer, case.inputs, **case.call_kwargs)
    layer2 = case.make("float32")
    model = tiny_model(layer2, case.inputs, **case.call_kwargs)
    randomize_weights_if_any(layer2, 2)
    check_save_load(model, case.inputs, tmp_path)


def case_tflite(case, tmp_path):
    if case.tflite is not True:
        assert isinstance(case.tflite, str) and case.tflite, "document why TFLite cannot hold this layer"
        return
    layer = case.tflite_make("float32")
    model = tiny_model(layer, case.inputs, **case.call_kwargs)
    randomize_weights_if_any(layer, 3)
    check_tflite(model, case.inputs, tmp_path)


def case_shape_error(case):
    import pytest

    assert case.bad is not None, f"{case.name}: no shape-error check"
    bad_inputs, pattern = case.bad
    with pytest.raises(ValueError, match=pattern):
        call_layer(case.make("float32"), as_list(bad_inputs), **case.call_kwargs)


# ----------------------------------------------------------------- losses
def check_loss_gradient(fn, inputs, atol=1e-6):
    """Central finite differences of a scalar/per-example loss in float64."""
    err = gradient_error(fn, inputs)
    assert err < atol, f"max |analytic - numeric| = {err}"


def check_loss_roundtrip(loss, y_true, y_pred, tmp_path, atol=1e-6):
    """get_config/from_config, keras serialize/deserialize, and a compiled
    model's save/load all give a loss that computes the same value."""
    expected = to_numpy(loss(y_true, y_pred))
    clone = type(loss).from_config(copy.deepcopy(loss.get_config()))
    assert_close(to_numpy(clone(y_true, y_pred)), expected, atol=atol)
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(revived) is type(loss)
    assert_close(to_numpy(revived(y_true, y_pred)), expected, atol=atol)
    inp = keras.Input(np.shape(y_pred)[1:])
    model = keras.Model(inp, keras.layers.Identity()(inp))
    model.compile(loss=loss)
    path = os.path.join(str(tmp_path), "with_loss.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.loss) is type(loss)
    assert_close(to_numpy(loaded.loss(y_true, y_pred)), expected, atol=atol)
