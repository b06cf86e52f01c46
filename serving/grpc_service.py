"""TF Serving's gRPC API: the official PredictionService and ModelService servicers
(`tensorflow_serving.apis.*_pb2_grpc`) on grpcio's own server."""

import threading
import time
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import protos
from serving.errors import ServingError, invalid
from serving.manager import validate_inputs


def _spec_target(model_spec):
    which = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if which == "version" else None
    label = model_spec.version_label if which == "version_label" else None
    return model_spec.name, version, label


_API = {"Predict": "predict", "GetModelMetadata": "metadata", "Classify": "classify", "Regress": "regress",
        "MultiInference": "multi_inference", "GetModelStatus": "status", "HandleReloadConfigRequest": "reload"}
_call = threading.local()   # the servable version a call resolved, for its metrics


def _resolved(servable):
    _call.version = servable.version
    return servable


def _guard(method):
    api = _API[method.__name__]

    def wrapper(self, request, context):
        metrics = getattr(self, "metrics", None)
        _call.version, status, start = None, "OK", time.perf_counter()
        if metrics is not None:
            metrics.in_flight("GRPC", 1)
        try:
            return method(self, request, context)
        except ServingError as error:
            status = error.code
            context.abort(error.grpc_code, error.message)
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            if metrics is not None:
                metrics.in_flight("GRPC", -1)
                spec = getattr(request, "model_spec", None)
                metrics.request(spec.name if spec is not None else "", _call.version, api, "GRPC", status,
                                time.perf_counter() - start)
    wrapper.__name__ = method.__name__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager, max_batch, max_elements, metrics=None):
        self.manager, self.max_batch, self.max_elements = manager, max_batch, max_elements
        self.metrics = metrics

    @_guard
    def Predict(self, request, context):
        servable = _resolved(self.manager.resolve(*_spec_target(request.model_spec)))
        signature = servable.signature(request.model_spec.signature_name)
        arrays = {}
        for alias, tensor in request.inputs.items():
            if alias not in signature.inputs:
                validate_inputs(signature, {alias: None}, self.max_batch)  # raises the alias error
            arrays[alias] = protos.tensor_proto_to_array(tensor, signature.inputs[alias], self.max_elements)
        validate_inputs(signature, arrays, self.max_batch)
        start = time.perf_counter()
        outputs = servable.run(signature, arrays, list(request.output_filter))
        if self.metrics is not None:
            self.metrics.runtime(servable.name, servable.version, "predict", time.perf_counter() - start)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(protos.array_to_tensor_proto(array))
        return response

    @_guard
    def GetModelMetadata(self, request, context):
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise invalid("Metadata field(s) not supported: " + ",".join(f for f in fields if f != "signature_def")
                          if fields else "GetModelMetadataRequest must specify at least one metadata_field")
        return protos.model_metadata_response(_resolved(self.manager.resolve(*_spec_target(request.model_spec))))

    def _method_check(self, request, verb, method):
        servable = _resolved(self.manager.resolve(*_spec_target(request.model_spec)))
        signature = servable.signature(request.model_spec.signature_name)
        raise invalid(f"Expected {verb} signature method_name to be {method}. Was: {signature.method_name}")

    @_guard
    def Classify(self, request, context):
        self._method_check(request, "classification", "tensorflow/serving/classify")

    @_guard
    def Regress(self, request, context):
        self._method_check(request, "regression", "tensorflow/serving/regress")

    @_guard
    def MultiInference(self, request, context):
        raise ServingError("UNIMPLEMENTED", "MultiInference is not supported by the local server")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager, metrics=None):
        self.manager, self.metrics = manager, metrics

    @_guard
    def GetModelStatus(self, request, context):
        return protos.model_status_response(self.manager, *_spec_target(request.model_spec))

    @_guard
    def HandleReloadConfigRequest(self, request, context):
        self.manager.reload_config(request.config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def create_server(manager, host, port, *, max_workers=8, max_concurrent_rpcs=64, max_message_bytes=8 << 20,
                  max_batch=256, max_elements=8 << 20, metrics=None):
    """A started-later grpc.Server; returns (server, bound port)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", max_message_bytes),
                 ("grpc.max_send_message_length", 64 << 20)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, max_batch, max_elements, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager, metrics), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    return server, bound
