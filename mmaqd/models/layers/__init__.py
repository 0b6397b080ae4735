from . import quant_layers  # noqa: F401  (registration)
