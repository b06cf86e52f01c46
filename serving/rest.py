"""TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest) on Starlette.

  GET  /v1/models/<name>[/versions/<v>|/labels/<l>]             model status
  GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata    signature defs
  POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict     row "instances" or columnar "inputs"
  POST ...:classify / ...:regress                                where the signature's method allows

  GET  /monitoring/prometheus/metrics                             Prometheus text (serving/metrics.py)

Errors are TF Serving's JSON, `{"error": "..."}`, with its HTTP status codes.
Bodies over `max_body_bytes` get 413 before they are read whole; model calls
run in worker threads, at most `max_concurrency` at once.
"""

import base64
import json
import re
import time

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from serving import protos
from serving.errors import ServingError, invalid
from serving.manager import validate_inputs
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

_PATH = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*?)"
                   r"(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[A-Za-z0-9_.-]+))?"
                   r"(?P<meta>/metadata)?(?::(?P<verb>predict|classify|regress))?$")
METHODS = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}


class _Json(Response):
    media_type = "application/json"

    def render(self, content):
        return json.dumps(content, separators=(",", ":")).encode()


def _error(error):
    return _Json({"error": error.message}, status_code=error.http_status)


def create_app(manager, *, max_body_bytes=8 << 20, max_concurrency=8, max_batch=256, metrics=None):
    limiter = anyio.CapacityLimiter(max_concurrency)

    async def read_body(request):
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_body_bytes):
            raise ServingError("INVALID_ARGUMENT", f"request body over {max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise ServingError("INVALID_ARGUMENT", f"request body over {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def models(request):
        match = _PATH.match(request.path_params["rest"])
        if not match:
            return _Json({"error": "Malformed request: " + request.method + " " + request.url.path}, 404)
        name, version, label = match["name"], match["version"], match["label"]
        api = match["verb"] or ("metadata" if match["meta"] else "status")
        call = {"version": None, "status": "OK", "start": time.perf_counter()}
        if metrics is not None:
            metrics.in_flight("REST", 1)
        try:
            if request.method == "GET":
                if match["verb"]:
                    raise ServingError("UNIMPLEMENTED", f"{match['verb']} needs POST")
                if match["meta"]:
                    servable = manager.resolve(name, version, label)
                    call["version"] = servable.version
                    return _Json(protos.rest_metadata(servable))
                return _Json(protos.to_json_dict(protos.model_status_response(manager, name, version, label)))
            if not match["verb"] or match["meta"]:
                call["status"] = "NOT_FOUND"
                return _Json({"error": "Malformed request: POST " + request.url.path}, 404)
            try:
                body = await read_body(request)
            except ServingError as error:
                call["status"] = "RESOURCE_EXHAUSTED"
                return _Json({"error": error.message}, 413)
            call["start"] = time.perf_counter()  # latency from the whole request in, as TF Serving
            servable = manager.resolve(name, version, label)
            call["version"] = servable.version
            result = await anyio.to_thread.run_sync(_handle, servable, match["verb"], body, max_batch, metrics,
                                                    limiter=limiter)
            return _Json(result)
        except ServingError as error:
            call["status"] = error.code
            return _error(error)
        except ClientDisconnect:
            call["status"] = "CANCELLED"
            return Response(status_code=499)
        finally:
            if metrics is not None:
                metrics.in_flight("REST", -1)
                metrics.request(name, call["version"], api, "REST", call["status"],
                                time.perf_counter() - call["start"])

    async def prometheus(request):
        if metrics is None:
            return _Json({"error": "metrics are off"}, 404)
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    return Starlette(routes=[Route("/v1/models/{rest:path}", models, methods=["GET", "POST"]),
                             Route("/monitoring/prometheus/metrics", prometheus, methods=["GET"])])


def _handle(servable, verb, body, max_batch, metrics=None):
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise invalid(f"JSON Parse error: {str(error)[:200]}") from None
    if not isinstance(request, dict):
        raise invalid("JSON Value: request body must be a JSON object")
    signature = servable.signature(request.get("signature_name"))
    if verb != "predict":
        # Classify/Regress take tf.Example protos and need a signature with that method.
        raise invalid(f"Expected {'classification' if verb == 'classify' else 'regression'} signature "
                      f"method_name to be {METHODS[verb]}. Was: {signature.method_name}")
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances == has_inputs:
        raise invalid("Missing 'inputs' or 'instances' key" if not has_instances
                      else "Only one of 'instances' or 'inputs' may be specified")
    bools = b"true" in body or b"false" in body
    if has_instances:
        arrays = _row_inputs(request["instances"], signature, bools)
    else:
        arrays = _columnar_inputs(request["inputs"], signature, bools)
    validate_inputs(signature, arrays, max_batch)
    start = time.perf_counter()
    outputs = servable.run(signature, arrays)
    if metrics is not None:
        metrics.runtime(servable.name, servable.version, verb, time.perf_counter() - start)
    if has_instances:
        names = sorted(outputs)
        if len(names) == 1:
            return {"predictions": _jsonable(outputs[names[0]])}
        rows = len(next(iter(outputs.values())))
        return {"predictions": [{k: _jsonable(outputs[k][i]) for k in names} for i in range(rows)]}
    if len(outputs) == 1:
        return {"outputs": _jsonable(next(iter(outputs.values())))}
    return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}


def _jsonable(array):
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind == "S":
        return _decode_bytes(array.tolist())
    return array.tolist()


def _decode_bytes(value):
    if isinstance(value, list):
        return [_decode_bytes(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value


_NONE = object()
_JSON_TYPE = {"U": "String", "S": "String", "b": "Bool", "f": "Number", "i": "Int", "u": "Int"}


def _type_error(alias, spec, value, kind):
    """TF Serving's message for a JSON value of the wrong type."""
    shown = json.dumps(value)[:50] if isinstance(value, (str, bool, int, float, type(None))) else repr(value)[:50]
    json_type = {bool: "Bool", str: "String", type(None): "Null", int: "Int", float: "Number"}.get(
        type(value), _JSON_TYPE.get(kind, "Object"))
    return invalid(f"Failed to process element: '{alias}': JSON Value: {shown} Type: {json_type} "
                   f"is not of expected type: {spec.dtype_name}")


def _leaves(value):
    """The scalars of nested JSON lists, in order."""
    stack = [iter([value])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            yield item
        else:
            stack.pop()


def _to_array(value, spec, alias, may_hold_bools=True):
    """A JSON value as an array of the signature's dtype, with TF Serving's type rules: a number
    input takes JSON numbers only (no strings such as "12.5", no true/false), an integer input
    takes integers only (no 1.5), a bool input takes true/false only. NumPy turns [1.5, true]
    into [1.5, 1.0], so number inputs are scanned for booleans when the body has a `true` or
    `false` token (`may_hold_bools`)."""
    if spec.dtype == np.dtype(object):
        value = _b64(value)
        try:
            return np.asarray(value, dtype=spec.dtype)
        except (ValueError, TypeError) as error:
            raise invalid(f"Failed to process element: '{alias}' as {spec.dtype_name}: {str(error)[:200]}") from None
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as error:  # ragged lists
        raise invalid(f"Failed to process element: '{alias}' as {spec.dtype_name}: {str(error)[:200]}") from None
    kind, want = raw.dtype.kind, spec.dtype.kind
    if kind in "USO" or (may_hold_bools and kind in "iuf" and want != "b"):
        # strings (NumPy makes [1.5, "2"] all strings), null, objects, huge integers, or booleans
        # hidden among numbers
        bad = next((v for v in _leaves(value) if not isinstance(v, (int, float)) or isinstance(v, bool)), _NONE)
        if bad is not _NONE:
            raise _type_error(alias, spec, bad, kind)
        if kind in "USO":   # integers beyond int64
            raise invalid(f"Failed to process element: '{alias}': value out of range for {spec.dtype_name}")
    if (kind == "b") != (want == "b"):
        raise _type_error(alias, spec, raw.flat[0].item(), kind)
    if want in "iu" and kind == "f":
        bad = next((v for v in raw.flat if not float(v).is_integer()), raw.flat[0])
        raise _type_error(alias, spec, float(bad), kind)
    if want in "iu" and raw.size:
        info = np.iinfo(spec.dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise invalid(f"Failed to process element: '{alias}': value out of range for {spec.dtype_name}")
    try:
        with np.errstate(over="ignore"):  # float64 -> float32 overflow gives inf, refused by validate_inputs
            return raw.astype(spec.dtype, copy=False)
    except (ValueError, TypeError, OverflowError) as error:
        raise invalid(f"Failed to process element: '{alias}' as {spec.dtype_name}: {str(error)[:200]}") from None


def _b64(value):
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid("JSON object: expected {\"b64\": <base64 string>}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise invalid("Unable to base64 decode") from None
    if isinstance(value, list):
        return [_b64(v) for v in value]
    if isinstance(value, str):
        return value.encode()
    return value


def _row_inputs(instances, signature, bools=True):
    if not isinstance(instances, list) or not instances:
        raise invalid("'instances' must be a non-empty JSON array")
    aliases = sorted(signature.inputs)
    named = all(isinstance(row, dict) and "b64" not in row for row in instances)
    if named:
        keys = set(instances[0])
        if any(set(row) != keys for row in instances):
            raise invalid("Failed to process element: every instance must have the same named inputs")
        return {k: _to_array([row[k] for row in instances], signature.inputs[k], k, bools)
                if k in signature.inputs else np.zeros(0) for k in keys}
    if len(aliases) != 1:
        raise invalid(f"instances must be JSON objects naming the inputs {{{','.join(aliases)}}}")
    return {aliases[0]: _to_array(instances, signature.inputs[aliases[0]], aliases[0], bools)}


def _columnar_inputs(inputs, signature, bools=True):
    aliases = sorted(signature.inputs)
    if isinstance(inputs, dict) and "b64" not in inputs:
        return {k: _to_array(v, signature.inputs[k], k, bools) if k in signature.inputs else np.zeros(0)
                for k, v in inputs.items()}
    if len(aliases) != 1:
        raise invalid(f"'inputs' must be a JSON object naming the inputs {{{','.join(aliases)}}}")
    return {aliases[0]: _to_array(inputs, signature.inputs[aliases[0]], aliases[0], bools)}
