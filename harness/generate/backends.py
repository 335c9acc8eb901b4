"""Loading a model through its backend plugin, with the plugin's options validated.

Every stage that runs a model (evaluation, Ray workers, the teacher data source, the loop)
loads it here, so an unknown backend or a bad option reads the same everywhere.
"""

from __future__ import annotations

from pydantic import ValidationError

from harness.components.contracts import Backend
from harness.components.registry import Registry
from harness.errors import ConfigError
from harness.types import ModelSpec


def load_backend(spec: ModelSpec, registry: Registry) -> Backend:
    """Instantiate the named backend with validated options (loads the model)."""
    backend_cls = registry.backend(spec.backend, where="--backend")
    try:
        options = backend_cls.Options.model_validate(dict(spec.options))
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = ".".join(str(p) for p in error["loc"])
        allowed = ", ".join(sorted(backend_cls.Options.model_fields))
        raise ConfigError(
            f"backend {spec.backend!r} option {field_name!r}: {error['msg']} (options: {allowed})"
        ) from None
    return backend_cls(spec, options)
