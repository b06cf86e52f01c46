"""A name -> builder table, so apps pick models (and other parts) by name."""

from core.errors import UserError


class Registry:
    """Holds builders by name; `@registry.register("name")` adds one.

    >>> models = Registry("model")
    >>> @models.register("mlp")
    ... def mlp(input_shape, num_classes): ...
    """

    def __init__(self, kind):
        self.kind = kind
        self._builders = {}

    def register(self, name):
        def decorator(builder):
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder
        return decorator

    def get(self, name):
        if name not in self._builders:
            raise UserError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}")
        return self._builders[name]

    def names(self):
        return sorted(self._builders)

    def __contains__(self, name):
        return name in self._builders
