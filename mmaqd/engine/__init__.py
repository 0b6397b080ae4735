from . import checkpoint_loading  # noqa: F401  (registers the local checkpoint loader)
