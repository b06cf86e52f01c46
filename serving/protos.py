"""Official TF Serving protos built from the manager's state, and TensorProto <-> NumPy.

Both front ends answer with the same protos: gRPC sends them as they are, REST
prints them with `json_format`, which is how TF Serving's REST API prints them.
"""

import numpy as np
from google.protobuf import json_format

from serving.errors import invalid

STATE_ENUM = {"START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


def model_status_response(manager, name, version=None, label=None):
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, error in manager.status(name, version, label):
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = STATE_ENUM[state]
        entry.status.error_code = 0 if not error else 13  # INTERNAL for a failed load
        entry.status.error_message = error
    return response


def model_metadata_response(servable):
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature_def)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def to_json_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def rest_metadata(servable):
    """GET /v1/models/<name>/metadata, as TF Serving prints it."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature_def)
    return {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": json_format.MessageToDict(signature_map, preserving_proto_field_name=True)}}


# --- tensors ------------------------------------------------------------------

def tensor_proto_to_array(proto, spec, max_elements):
    """A request TensorProto as an ndarray, checked against the signature before
    anything is allocated (a proto may claim a huge shape with one value)."""
    import tensorflow as tf

    if proto.dtype != spec.dtype_enum:
        got = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
        raise invalid(f"Expects arg to be {spec.dtype_name} but {got} is provided")
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
        raise invalid("request tensors must have a fully known shape")
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if count > max_elements:
        raise invalid(f"tensor of {count} elements exceeds the server's limit of {max_elements}")
    if proto.tensor_content and spec.dtype != np.dtype(object):
        if len(proto.tensor_content) != count * spec.dtype.itemsize:
            raise invalid(f"tensor_content holds {len(proto.tensor_content)} bytes; shape "
                          f"{dims} of {spec.dtype_name} needs {count * spec.dtype.itemsize}")
        return np.frombuffer(proto.tensor_content, dtype=spec.dtype).reshape(dims)
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError) as error:
        raise invalid(f"malformed tensor: {error}") from None


def array_to_tensor_proto(array):
    """An ndarray as a TensorProto (tensor_content for numbers, as TF does)."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    array = np.asarray(array)
    if array.dtype.kind in "biuf" and array.dtype != np.float16:
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)   # (never on a 0-d array: it would become [1])
        return tensor_pb2.TensorProto(
            dtype=tf.dtypes.as_dtype(array.dtype).as_datatype_enum,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]),
            tensor_content=array.tobytes())
    return tf.make_tensor_proto(array)
