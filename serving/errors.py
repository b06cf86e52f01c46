"""Errors with TF Serving's status codes, shared by the REST and gRPC front ends."""

# tensorflow_serving/model_servers/http_rest_api_handler: status code -> HTTP status.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500,
}


class ServingError(Exception):
    """A request the server refuses; `code` is a gRPC status code name."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return HTTP_STATUS.get(self.code, 500)

    @property
    def grpc_code(self):
        import grpc
        return getattr(grpc.StatusCode, self.code)


def invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message):
    return ServingError("NOT_FOUND", message)
