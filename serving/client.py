"""Clients for TF Serving's REST and gRPC APIs; they work against the real
`tensorflow/serving` container and against the local server alike.

    from serving.client import RestClient, GrpcClient
    RestClient("http://127.0.0.1:8501").predict("classify", {"images": batch})
    GrpcClient("127.0.0.1:8500").predict("classify", {"images": batch})

Both return a dict output alias -> ndarray and raise `ServingClientError`
(with the server's status and TF Serving's message) when the server refuses.
"""

import http.client
import json
import urllib.parse

import numpy as np


class ServingClientError(Exception):
    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _model_path(model, version=None, label=None):
    path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return path


class RestClient:
    """One keep-alive HTTP connection (use one client per thread)."""

    def __init__(self, url="http://127.0.0.1:8501", timeout=30.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"REST url must be http(s)://host:port, got {url}")
        self.host, self.port, self.https = parts.hostname, parts.port or 8501, parts.scheme == "https"
        self.timeout = timeout
        self._conn = None

    def _connection(self):
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method, path, body=None):
        """(status, parsed JSON) for one request; reconnects once if the server closed the connection."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"error": raw.decode("utf-8", "replace")[:500]}
        return response.status, payload

    def _call(self, method, path, body=None):
        status, payload = self.request(method, path, body)
        if status != 200:
            raise ServingClientError(status, payload.get("error", payload) if isinstance(payload, dict) else payload)
        return payload

    def status(self, model, version=None, label=None):
        return self._call("GET", _model_path(model, version, label))

    def metadata(self, model, version=None, label=None):
        return self._call("GET", _model_path(model, version, label) + "/metadata")

    def predict(self, model, inputs, *, version=None, label=None, signature_name=None, row=False):
        """`inputs`: dict alias -> array (columnar "inputs", or row "instances" with row=True)."""
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        body = {"signature_name": signature_name} if signature_name else {}
        if row:
            names = list(inputs)
            rows = len(next(iter(inputs.values())))
            body["instances"] = (inputs[names[0]].tolist() if len(names) == 1 else
                                 [{k: inputs[k][i].tolist() for k in names} for i in range(rows)])
        else:
            body["inputs"] = {k: v.tolist() for k, v in inputs.items()}
        payload = self._call("POST", _model_path(model, version, label) + ":predict", body)
        if row:
            predictions = payload["predictions"]
            if predictions and isinstance(predictions[0], dict):
                return {k: np.asarray([p[k] for p in predictions]) for k in predictions[0]}
            return {"outputs": np.asarray(predictions)}
        outputs = payload["outputs"]
        return (
            {k: np.asarray(v) for k, v in outputs.items()}
            if isinstance(outputs, dict)
            else {"outputs": np.asarray(outputs)}
        )

    def signature(self, model, version=None, signature_name="serving_default"):
        """{"inputs": {alias: (dtype name, shape)}, "outputs": {...}} from the metadata."""
        signature = self.metadata(model, version)["metadata"]["signature_def"]["signature_def"][signature_name]
        return {
            side: {
                alias: (info["dtype"], [int(d["size"]) for d in info.get("tensor_shape", {}).get("dim", [])])
                for alias, info in signature[side].items()
            }
            for side in ("inputs", "outputs")
        }


class GrpcClient:
    """PredictionService and ModelService through the official stubs."""

    def __init__(self, target="127.0.0.1:8500", timeout=30.0, max_message_bytes=64 << 20):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def _invoke(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingClientError(error.code().name, error.details()) from None

    @staticmethod
    def _spec(spec, model, version=None, label=None, signature_name=None):
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    def status(self, model, version=None, label=None):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label)
        return self._invoke(self.models.GetModelStatus, request)

    def metadata(self, model, version=None, label=None):
        """(version, SignatureDefMap proto)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        response = self._invoke(self.predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return response.model_spec.version.value, signatures

    def predict_response(self, model, inputs, *, version=None, label=None, signature_name=None, output_filter=()):
        from tensorflow_serving.apis import predict_pb2

        from serving.protos import array_to_tensor_proto

        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, model, version, label, signature_name)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(array_to_tensor_proto(np.asarray(value)))
        return self._invoke(self.predictions.Predict, request)

    def predict(self, model, inputs, **kwargs):
        import tensorflow as tf

        response = self.predict_response(model, inputs, **kwargs)
        return {alias: tf.make_ndarray(tensor) for alias, tensor in response.outputs.items()}
