"""The model manager: which versions of which models are loaded, per models.config.

It mirrors what TF Serving's file-system source and version policies do: each
configured model has a base folder of integer version folders; the policy
(latest N, all, specific) picks the versions to serve; a poll thread loads a
version dropped into the folder (written whole, e.g. by an atomic rename, as
`core.export.export_model` does) and unloads one that the policy no longer
wants, without a restart. It also re-reads models.config when the file changes.

Only SavedModels are loaded (`tf.saved_model.load`: no pickle), only from the
folders the config names; a request names a model and a version number or
label, never a path.
"""

import os
import threading

import numpy as np

from serving import batching
from serving import config as config_lib
from serving.errors import ServingError, invalid, not_found

DEFAULT_SIGNATURE = "serving_default"


class TensorSpec:
    """dtype and shape (None for an unknown dimension) of one signature tensor."""

    def __init__(self, info):
        import tensorflow as tf

        self.info = info
        self.dtype_enum = info.dtype
        self.tf_dtype = tf.dtypes.as_dtype(info.dtype)
        self.dtype = np.dtype(self.tf_dtype.as_numpy_dtype) if self.tf_dtype != tf.string else np.dtype(object)
        shape = info.tensor_shape
        self.shape = None if shape.unknown_rank else [None if d.size < 0 else int(d.size) for d in shape.dim]

    @property
    def dtype_name(self):
        return self.tf_dtype.name

    def shape_text(self):
        return (
            "unknown" if self.shape is None else "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
        )


class Signature:
    def __init__(self, name, signature_def, function):
        self.name = name
        self.signature_def = signature_def
        self.method_name = signature_def.method_name
        self.function = function
        self.inputs = {alias: TensorSpec(info) for alias, info in signature_def.inputs.items()}
        self.outputs = {alias: TensorSpec(info) for alias, info in signature_def.outputs.items()}


class Bundle:
    """A loaded SavedModel: its signature defs (read from saved_model.pb, as TF
    Serving reports them), callable signatures and labels."""

    def __init__(self, path):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.path = path
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        # the "serve" meta graph, as TF Serving picks it
        graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags] or list(proto.meta_graphs)
        self.signature_defs = graphs[0].signature_def
        self.loaded = tf.saved_model.load(path, tags=["serve"])
        self.signatures = {}
        for key, signature_def in self.signature_defs.items():
            if key in self.loaded.signatures:
                self.signatures[key] = Signature(key, signature_def, self.loaded.signatures[key])
        labels = os.path.join(path, "assets.extra", "labels.txt")
        self.labels = None
        if os.path.isfile(labels):
            with open(labels) as f:
                self.labels = [line for line in f.read().split("\n") if line]


class Servable:
    """One version of one model (models sharing a folder share its Bundle)."""

    def __init__(self, name, version, path, bundle=None, batcher=None):
        self.name, self.version, self.path = name, version, path
        self.batcher = batcher  # serving.batching.Batcher when --enable_batching
        self.bundle = bundle or Bundle(path)
        self.signature_defs = self.bundle.signature_defs
        self.signatures = self.bundle.signatures
        self.labels = self.bundle.labels

    def warm_up(self):
        """Run every signature once on a batch of one (zeros, empty strings) before the version
        takes requests, so the first client does not pay for the graph's first execution (TF
        Serving does this from assets.extra/tf_serving_warmup_requests). Signatures whose
        inputs have unknown inner dimensions are skipped; a failure here is not a load failure."""
        import tensorflow as tf

        for signature in self.signatures.values():
            feeds = {}
            for alias, spec in signature.inputs.items():
                if spec.shape is None or any(d is None for d in spec.shape[1:]):
                    break
                shape = [1 if d is None else d for d in spec.shape]
                feeds[alias] = tf.zeros(shape, spec.tf_dtype) if spec.tf_dtype != tf.string else tf.fill(shape, "")
            else:
                try:
                    signature.function(**feeds)
                except Exception:  # a model that refuses zeros still serves real inputs
                    pass

    def signature(self, name):
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return self.signatures[name]

    def run(self, signature, inputs, output_filter=()):
        """Run validated `inputs` (alias -> ndarray); alias -> ndarray of the outputs."""
        import tensorflow as tf

        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                    f"the set {{{','.join(sorted(signature.outputs))}}}."
                )
        def call(arrays):
            try:
                outputs = signature.function(
                    **{k: tf.constant(v, dtype=signature.inputs[k].tf_dtype) for k, v in arrays.items()}
                )
            except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
                raise invalid(str(error).strip().splitlines()[0][:500]) from None
            return {k: v.numpy() for k, v in outputs.items()}

        if self.batcher is not None and batching.batchable(signature):
            outputs = self.batcher.run((self.name, self.version, signature.name), call, inputs)
        else:
            outputs = call(inputs)
        names = list(output_filter) or list(outputs)
        return {k: outputs[k] for k in names}


def validate_inputs(signature, arrays, max_batch):
    """Check names, dtypes and shapes of `arrays` against the signature, TF Serving style."""
    expected = ",".join(sorted(signature.inputs))
    for alias in arrays:
        if alias not in signature.inputs:
            raise invalid(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be in the set {{{expected}}}."
            )
    missing = sorted(set(signature.inputs) - set(arrays))
    if missing:
        raise invalid(
            f"input tensor alias(es) missing from request: {','.join(missing)}. "
            f"Inputs expected to be in the set {{{expected}}}."
        )
    batch = None
    for alias, array in arrays.items():
        spec = signature.inputs[alias]
        shape = list(array.shape)
        if spec.tf_dtype.is_floating or spec.tf_dtype.is_complex:
            # Deliberately stricter than TF Serving, which passes NaN and Inf to the model.
            finite = np.isfinite(array)
            if not finite.all():
                bad = int(finite.size - np.count_nonzero(finite))
                raise invalid(
                    f"input '{alias}': {bad} of {finite.size} values are NaN or infinite "
                    f"(or out of {spec.dtype_name} range); the server accepts finite numbers only"
                )
        if spec.shape is not None:
            if len(shape) != len(spec.shape) or any(e is not None and e != d for e, d in zip(spec.shape, shape)):
                raise invalid(
                    f"input '{alias}': expected shape {spec.shape_text()} ({spec.dtype_name}), "
                    f"got [{','.join(map(str, shape))}]"
                )
        if shape:
            if shape[0] > max_batch:
                raise invalid(f"input '{alias}': batch of {shape[0]} exceeds the server's limit of {max_batch}")
            if batch is not None and shape[0] != batch:
                raise invalid(f"inputs have different batch sizes: {batch} and {shape[0]}")
            batch = shape[0]
    return arrays


class ModelManager:
    """Loads and unloads versions following the config; answers lookups."""

    def __init__(self, specs, *, config_path=None, container_root=config_lib.CONTAINER_ROOT, log=print,
                 batching_parameters=None):
        self.config_path = config_path
        self.batcher = batching.Batcher(batching_parameters) if batching_parameters else None
        self.container_root = container_root
        self.log = log
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._specs = {s.name: s for s in specs}
        self._servables = {s.name: {} for s in specs}  # name -> {version: Servable}
        self._states = {s.name: {} for s in specs}  # name -> {version: (state, error)}
        self._failed = {}  # (name, version) -> mtime of a folder that failed to load
        self._bundles = {}  # (real path, mtime) -> Bundle, shared by model names
        self._kept = {}  # name -> versions kept up while wanted ones fail
        self._config_stat = self._stat_config()
        self._stop = threading.Event()
        self._thread = None

    def _stat_config(self):
        """What tells a changed models.config apart: a file renamed into place has a new inode."""
        try:
            st = os.stat(self.config_path) if self.config_path else None
        except OSError:
            return None
        return st and (st.st_ino, st.st_mtime_ns, st.st_size)

    @property
    def models_root(self):
        return os.path.dirname(os.path.abspath(self.config_path)) if self.config_path else None

    def model_names(self):
        with self._lock:
            return sorted(self._specs)

    def has_model(self, name):
        return name in self._specs

    def loaded_versions(self):
        """{model name: [versions serving]}."""
        with self._lock:
            return {name: sorted(versions) for name, versions in self._servables.items()}

    # -- loading -----------------------------------------------------------
    def refresh(self, check_config=True):
        """One pass of the file-system source: re-read models.config if it changed (when
        `check_config`), load wanted versions, then unload the versions no longer wanted."""
        with self._refresh_lock:
            if check_config and self.config_path and os.path.isfile(self.config_path):
                stat = self._stat_config()
                if stat != self._config_stat:
                    self._config_stat = stat
                    try:
                        self.set_specs(config_lib.read_config(self.config_path, container_root=self.container_root))
                        self.log(f"reloaded {self.config_path}")
                    except Exception as error:  # a half-edited file: keep serving the old config
                        self.log(f"cannot reload {self.config_path}: {error}")
            with self._lock:
                specs = list(self._specs.values())
            for spec in specs:
                self._refresh_model(spec)
            with self._lock:  # forget bundles that no model serves any more
                used = {id(s.bundle) for versions in self._servables.values() for s in versions.values()}
            self._bundles = {k: b for k, b in self._bundles.items() if id(b) in used}

    def _refresh_model(self, spec):
        wanted = spec.wanted(config_lib.list_versions(spec.local_path))
        with self._lock:
            loaded = set(self._servables.get(spec.name, {}))
        for version in wanted:
            if version in loaded:
                continue
            path = os.path.join(spec.local_path, str(version))
            mtime = os.path.getmtime(path)
            if self._failed.get((spec.name, version)) == mtime:
                continue
            with self._lock:
                self._states[spec.name][version] = ("LOADING", "")
            try:
                key = (os.path.realpath(path), mtime)
                if key not in self._bundles:
                    self._bundles[key] = Bundle(path)
                servable = Servable(spec.name, version, path, self._bundles[key], batcher=self.batcher)
                servable.warm_up()
            except Exception as error:
                self._failed[(spec.name, version)] = mtime
                message = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
                with self._lock:
                    self._states[spec.name][version] = ("END", f"failed to load: {message}")
                self.log(f"model {spec.name} version {version}: failed to load: {message}")
                continue
            with self._lock:
                if spec.name in self._servables:
                    self._servables[spec.name][version] = servable
                    self._states[spec.name][version] = ("AVAILABLE", "")
            self.log(f"model {spec.name}: serving version {version} from {path}")
        with self._lock:
            serving = self._servables.get(spec.name, {})
            unwanted = [v for v in serving if v not in wanted]
            if unwanted and wanted and not any(v in serving for v in wanted):
                # TF Serving's availability-preserving policy: a version is unloaded only once a
                # wanted one serves, so a new version that fails to load leaves the old one up.
                if self._kept.get(spec.name) != unwanted:
                    self._kept[spec.name] = unwanted
                    self.log(f"model {spec.name}: keeping version(s) {unwanted} until one of {wanted} loads")
                return
            self._kept.pop(spec.name, None)
            for version in unwanted:
                del serving[version]
                self._states[spec.name][version] = ("END", "")
                self.log(f"model {spec.name}: unloaded version {version}")

    def set_specs(self, specs):
        with self._lock:
            self._specs = {s.name: s for s in specs}
            for name in list(self._servables):
                if name not in self._specs:
                    del self._servables[name]
                    del self._states[name]
            for name in self._specs:
                self._servables.setdefault(name, {})
                self._states.setdefault(name, {})

    def reload_config(self, config_proto):
        """ModelService.HandleReloadConfigRequest: only folders under the models root."""
        from core.errors import UserError

        root = self.models_root
        if root is None:
            raise ServingError("FAILED_PRECONDITION", "the server was not started from a models.config")
        try:
            specs = config_lib.specs_from_proto(config_proto, root, container_root=self.container_root)
        except UserError as error:
            raise invalid(str(error)) from None
        for spec in specs:
            real = os.path.realpath(spec.local_path)
            if not (real + os.sep).startswith(os.path.realpath(root) + os.sep):
                raise ServingError(
                    "PERMISSION_DENIED", f"base_path '{spec.base_path}' is outside the served models folder"
                )
        self.set_specs(specs)
        self.refresh()

    def start_polling(self, seconds, config_seconds=None):
        """Poll the version folders every `seconds` (TF Serving's --file_system_poll_wait_seconds)
        and models.config every `config_seconds` (its --model_config_file_poll_wait_seconds;
        default: as often as the folders; 0: never)."""
        import time

        config_seconds = seconds if config_seconds is None else config_seconds

        def loop():
            next_config = time.monotonic() + config_seconds
            while not self._stop.wait(seconds):
                check_config = config_seconds > 0 and time.monotonic() >= next_config
                if check_config:
                    next_config = time.monotonic() + config_seconds
                try:
                    self.refresh(check_config=check_config)
                except Exception as error:  # keep the poller alive whatever a folder holds
                    self.log(f"poll error: {error}")

        self._thread = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self.batcher is not None:  # after the drain: the requests in flight have their answers
            self.batcher.stop()

    # -- lookups -----------------------------------------------------------
    def resolve(self, name, version=None, label=None):
        """The servable for a request; TF Serving's messages when there is none."""
        with self._lock:
            spec = self._specs.get(name)
            servables = self._servables.get(name, {})
            if label is not None:
                if spec is None or label not in spec.labels:
                    raise not_found(f"Unrecognized servable version label: {label}")
                version = spec.labels[label]
            if spec is None or not servables:
                request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
                raise not_found(f"Servable not found for request: {request}")
            if version is None:
                return servables[max(servables)]
            if int(version) not in servables:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return servables[int(version)]

    def status(self, name, version=None, label=None):
        """[(version, state, error message)] as ModelService.GetModelStatus reports."""
        with self._lock:
            spec = self._specs.get(name)
            if spec is None:
                raise not_found(f"Could not find any versions of model {name}")
            if label is not None:
                if label not in spec.labels:
                    raise not_found(f"Unrecognized servable version label: {label}")
                version = spec.labels[label]
            states = dict(self._states.get(name, {}))
        if version is not None:
            if int(version) not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            states = {int(version): states[int(version)]}
        if not states:
            raise not_found(f"Could not find any versions of model {name}")
        return [(v, *states[v]) for v in sorted(states, reverse=True)]
