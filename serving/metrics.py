"""Request metrics in the Prometheus text exposition format (version 0.0.4), at
TF Serving's path `/monitoring/prometheus/metrics` on the REST port.

TF Serving's own series, with its names and its microsecond buckets
(`monitoring::Buckets::Exponential(10, 1.8, 33)`), plus a `model_version` label
that TF Serving does not have:

    :tensorflow:serving:request_count{model_name,model_version,API,entrypoint,status}   counter
    :tensorflow:serving:request_latency{model_name,model_version,API,entrypoint}        histogram, us
    :tensorflow:serving:runtime_latency{model_name,model_version,API,runtime}           histogram, us

and the local server's own (not in TF Serving):

    local_serving_in_flight_requests{entrypoint}          gauge
    local_serving_rest_connections{state}                 gauge (open)
    local_serving_rest_connections_closed{reason}         counter (header_timeout, body_timeout,
                                                          write_timeout, evicted, refused)
    local_serving_model_versions_loaded{model_name}       gauge

Label values are bounded: a model name that is not configured is recorded as
"(unknown)" and its version as "", so clients cannot grow the series set.
"""

import bisect
import threading

# monitoring::Buckets::Exponential(10, 1.8, 33): upper bounds 10 * 1.8**i us, i < 32, then +Inf.
LATENCY_BUCKETS_US = tuple(10.0 * 1.8 ** i for i in range(32))
UNKNOWN_MODEL = "(unknown)"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names, values, extra=None):
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value):
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self):
        self.counts = [0] * (len(LATENCY_BUCKETS_US) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_US, value)] += 1
        self.sum += value
        self.count += 1


class Metrics:
    """Thread-safe counters and histograms; `render()` gives the exposition text."""

    REQUEST_LABELS = ("model_name", "model_version", "API", "entrypoint")
    RUNTIME_LABELS = ("model_name", "model_version", "API", "runtime")

    def __init__(self, known_model=None):
        self._lock = threading.Lock()
        self._known_model = known_model or (lambda name: True)
        self._requests = {}      # (model, version, api, entrypoint, status) -> count
        self._latency = {}       # (model, version, api, entrypoint) -> _Histogram
        self._runtime = {}       # (model, version, api, runtime) -> _Histogram
        self._in_flight = {"REST": 0, "GRPC": 0}
        self._closed = {}        # reason -> count
        self._gauges = {}        # callables giving {labels tuple: value}, by metric name

    def _model(self, name, version):
        if name and self._known_model(name):
            return name, "" if version is None else str(version)
        return UNKNOWN_MODEL, ""

    def request(self, model, version, api, entrypoint, status, seconds):
        model, version = self._model(model, version)
        with self._lock:
            key = (model, version, api, entrypoint, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._latency.get(key[:4])
            if histogram is None:
                histogram = self._latency[key[:4]] = _Histogram()
            histogram.observe(seconds * 1e6)

    def runtime(self, model, version, api, seconds, runtime="TF"):
        model, version = self._model(model, version)
        with self._lock:
            key = (model, version, api, runtime)
            histogram = self._runtime.get(key)
            if histogram is None:
                histogram = self._runtime[key] = _Histogram()
            histogram.observe(seconds * 1e6)

    def in_flight(self, entrypoint, delta):
        with self._lock:
            self._in_flight[entrypoint] += delta

    def connection_closed(self, reason):
        with self._lock:
            self._closed[reason] = self._closed.get(reason, 0) + 1

    def gauge(self, name, help_text, label_names, read):
        """A gauge read at scrape time: `read()` -> {label values tuple: number}."""
        self._gauges[name] = (help_text, tuple(label_names), read)

    def snapshot(self):
        with self._lock:
            return {"requests": dict(self._requests), "in_flight": dict(self._in_flight),
                    "closed": dict(self._closed)}

    def render(self):
        with self._lock:
            requests = sorted(self._requests.items())
            latency = sorted((k, (list(h.counts), h.sum, h.count)) for k, h in self._latency.items())
            runtime = sorted((k, (list(h.counts), h.sum, h.count)) for k, h in self._runtime.items())
            in_flight = sorted(self._in_flight.items())
            closed = sorted(self._closed.items())
        lines = []

        def header(name, kind, help_text):
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        name = ":tensorflow:serving:request_count"
        header(name, "counter", "The total number of requests, by model, version, API, entrypoint and status.")
        for key, value in requests:
            lines.append(f"{name}{_labels(self.REQUEST_LABELS + ('status',), key)} {value}")
        for name, help_text, labels, series in (
                (":tensorflow:serving:request_latency", "Distribution of wall time (in microseconds) "
                 "for TensorFlow Serving request.", self.REQUEST_LABELS, latency),
                (":tensorflow:serving:runtime_latency", "Distribution of wall time (in microseconds) "
                 "for TensorFlow Serving runtime.", self.RUNTIME_LABELS, runtime)):
            header(name, "histogram", help_text)
            for key, (counts, total, count) in series:
                cumulative = 0
                for bound, n in zip(LATENCY_BUCKETS_US + (float("inf"),), counts):
                    cumulative += n
                    le = "+Inf" if bound == float("inf") else _number(round(bound, 6))
                    bucket = _labels(labels, key, f'le="{le}"')
                    lines.append(f"{name}_bucket{bucket} {cumulative}")
                lines.append(f"{name}_sum{_labels(labels, key)} {_number(total)}")
                lines.append(f"{name}_count{_labels(labels, key)} {count}")
        name = "local_serving_in_flight_requests"
        header(name, "gauge", "Requests being handled now (local server only).")
        for entrypoint, value in in_flight:
            lines.append(f"{name}{_labels(('entrypoint',), (entrypoint,))} {value}")
        name = "local_serving_rest_connections_closed"
        header(name, "counter", "REST connections the server closed or refused, by reason (local server only).")
        for reason, value in closed:
            lines.append(f"{name}{_labels(('reason',), (reason,))} {value}")
        for name, (help_text, label_names, read) in sorted(self._gauges.items()):
            header(name, "gauge", help_text)
            for key, value in sorted(read().items()):
                lines.append(f"{name}{_labels(label_names, key)} {_number(value)}")
        return "\n".join(lines) + "\n"


def parse(text):
    """Parse exposition text strictly: {(name, frozenset of label pairs): value}, and the
    declared types {name: type}. Raises ValueError on a line that breaks the format."""
    import re

    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
                        r' (-?(?:[0-9.]+(?:e[+-]?[0-9]+)?|\+Inf|-Inf|NaN))$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    samples, types = {}, {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            if len(parts) != 4 or parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise ValueError(f"line {number}: bad TYPE line: {line}")
            types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        match = sample.match(line)
        if not match:
            raise ValueError(f"line {number}: not a sample: {line}")
        labels = frozenset(label.findall(match.group(3) or ""))
        key = (match.group(1), labels)
        if key in samples:
            raise ValueError(f"line {number}: repeated series: {line}")
        samples[key] = float(match.group(4))
    return samples, types
