"""Refuse NaN and infinite values in data before a model learns from them or answers them.

A NaN in the data does not always show up as a NaN loss: on CPUs with oneDNN a
ReLU maps NaN to 0, so a corrupt dataset trains silently and a corrupt input
gets a confident prediction. So the loaders, `core.training.fit` and the
predict commands look at the data once, up front, and stop with one line
naming the data and the first bad example.

NumPy only at import time (the TensorFlow-free device runner uses it);
TensorFlow is imported only to check a `tf.data` pipeline.
"""

import weakref

import numpy as np

from core.errors import UserError

# Keras' meaning of the parts of a `(x, y, sample_weight)` tuple.
ROLES = ("inputs", "labels", "sample weights")
FLAGS_PER_READ = 4096  # examples' flags fetched from a pipeline per Python iteration

# Pipelines already read once (by `core.data.batched`, before its shuffle):
# `fit` does not read them again. A second pass over a shuffled, augmented
# pipeline would also draw its random state, so epoch 1 would differ from a
# run without the check.
_CHECKED = weakref.WeakSet()


def mark_checked(dataset):
    """Record that `dataset` holds only finite values (its source was checked); returns it."""
    _CHECKED.add(dataset)
    return dataset


def is_float(array):
    return np.issubdtype(np.asarray(array).dtype, np.floating)


def first_non_finite(array):
    """(index tuple, value) of the first NaN or infinity of a float array in C order, or None.

    Integer, boolean and string arrays cannot hold either, so they pass for free."""
    array = np.asarray(array)
    if not is_float(array):
        return None
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    index = np.unravel_index(int(np.argmax(bad)), array.shape)
    return tuple(int(i) for i in index), float(array[index])


def message(what, value, where):
    """The one-line error: `what` names the data, `where` says where in it ("in its inputs at example 3")."""
    return f"{what} has a non-finite value ({value}) {where}; clean the data first"


def non_finite_message(array, what):
    """The one-line error for an array whose first axis counts examples, or None when it is all finite."""
    found = first_non_finite(array)
    if not found:
        return None
    index, value = found
    return message(what, value, f"at example {index[0] if index else 0}")


def check_finite(data, what, *, batched=True):
    """Raise `UserError` if `data` holds a NaN or infinity; return `data` otherwise.

    `data` is an array, a `(inputs, labels[, sample_weights])` tuple (nested
    tuples, lists and dicts of arrays inside), or a `tf.data.Dataset` of such
    elements (read once: `batched` says whether its elements are batches).
    Other inputs (Python generators, Keras PyDatasets) cannot be read twice
    cheaply and pass unchecked. `what` names the data in the message.
    """
    if data is None:
        return data
    if _is_dataset(data):
        if data in _CHECKED:
            return data
        found = _first_non_finite_in_dataset(data, batched)
    else:
        found = _first_non_finite_in_arrays(data)
    if found:
        raise UserError(message(what, found["value"], f"in its {found['role']} at {found['where']}"))
    return data


# --------------------------------------------------------------------------
# Arrays in memory: a NumPy pass, the first axis counts examples.


def _roles(data):
    """(role, part) pairs: a 1-3 tuple is (inputs, labels, sample weights) as Keras reads it."""
    if isinstance(data, (tuple, list)) and 1 <= len(data) <= len(ROLES):
        return list(zip(ROLES, data))
    return [("inputs", data)]


def _leaves(structure):
    if isinstance(structure, dict):
        for key in structure:
            yield from _leaves(structure[key])
    elif isinstance(structure, (tuple, list)):
        for item in structure:
            yield from _leaves(item)
    else:
        yield structure


def _first_non_finite_in_arrays(data):
    """The earliest bad example over all parts (so inputs and labels agree on "first")."""
    best = None
    for role, part in _roles(data):
        for leaf in _leaves(part):
            if not hasattr(leaf, "__array__") and not isinstance(leaf, (int, float)):
                continue  # not array-like (a generator, a PyDataset): cannot be read twice, so not checked
            found = first_non_finite(leaf)
            if found:
                index, value = found
                example = index[0] if index else 0
                if best is None or example < best["example"]:
                    best = dict(example=example, role=role, value=value, where=f"example {example}")
    return best


# --------------------------------------------------------------------------
# tf.data pipelines: one pass in the graph, only per-example flags come back.


def _is_dataset(data):
    import sys

    tf = sys.modules.get("tensorflow")  # a dataset means TensorFlow is already imported
    return tf is not None and isinstance(data, tf.data.Dataset)


def _float_leaves(element_spec):
    """Positions and roles of the dense float tensors in a dataset's flattened element."""
    import tensorflow as tf

    result = []
    for role, part in _roles(element_spec):
        for spec in tf.nest.flatten(part):
            result.append((role, isinstance(spec, tf.TensorSpec) and spec.dtype.is_floating))
    return [(i, role) for i, (role, floating) in enumerate(result) if floating]  # ragged/sparse: skipped


def _example_flags(leaves, batched):
    """Per example: (has a bad value, which float leaf has it first, that value)."""
    import tensorflow as tf

    def per_example(x):
        shape = tf.shape(x)
        if batched and x.shape.rank != 0:
            rows = tf.reshape(x, [shape[0], tf.reduce_prod(shape[1:])])
        else:
            rows = tf.reshape(x, [1, -1])
        bad = tf.logical_not(tf.math.is_finite(rows))
        # A padding column that counts as bad, so argmax is defined for empty and clean rows alike.
        n = tf.shape(rows)[0]
        first = tf.argmax(tf.concat([tf.cast(bad, tf.int32), tf.ones([n, 1], tf.int32)], axis=1),
                          axis=1, output_type=tf.int32)
        values = tf.concat([rows, tf.zeros([n, 1], rows.dtype)], axis=1)
        return tf.reduce_any(bad, axis=1), tf.cast(tf.gather(values, first, batch_dims=1), tf.float64)

    bad, values = zip(*[per_example(x) for x in leaves])
    bad, values = tf.stack(bad), tf.stack(values)  # (leaves, examples)
    leaf = tf.argmax(tf.cast(bad, tf.int32), axis=0, output_type=tf.int32)
    value = tf.gather(tf.transpose(values), leaf, batch_dims=1)
    return tf.reduce_any(bad, axis=0), leaf, value


def _first_non_finite_in_dataset(dataset, batched):
    import tensorflow as tf

    floats = _float_leaves(dataset.element_spec)
    if not floats:
        return None  # integer images, token ids: nothing to read

    def flags(*element):
        flat = tf.nest.flatten(element[0] if len(element) == 1 else element)
        return _example_flags([flat[i] for i, _ in floats], batched)

    # Each element gives one flag per example (one for an unbatched element); rebatched, few Python steps.
    flags_ds = dataset.map(flags, num_parallel_calls=tf.data.AUTOTUNE).unbatch().batch(FLAGS_PER_READ)
    offset = 0
    for bad, leaf, value in flags_ds.as_numpy_iterator():
        if bad.any():
            i = int(np.argmax(bad))
            example = offset + i
            where = f"example {example}" + (" (counting from the start of the pipeline)" if batched else "")
            return dict(example=example, role=floats[int(leaf[i])][1], value=float(value[i]), where=where)
        offset += len(bad)
    return None
