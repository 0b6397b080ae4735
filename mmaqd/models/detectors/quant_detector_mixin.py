"""What a quantized detector adds to an mmdet detector: bits by name, checkpoint checks."""
from typing import List, Optional

from mmengine.logging import MMLogger
from torch import nn

from mmaqd.models.utils import apply_quant_cfg, format_quant_table

# State-dict entries that an FP checkpoint cannot have: they are learned from data.
_QUANTIZER_KEY_PARTS = ('weight_quantizer.', 'input_quantizers.')


def is_quantizer_key(key: str) -> bool:
    """Whether a state-dict key belongs to a quantizer (step, clip value, observer)."""
    return any(part in key for part in _QUANTIZER_KEY_PARTS)


def _check_loaded_keys(module: nn.Module, incompatible) -> None:
    """Post-load hook: quantizer keys may be missing, nothing else may be off."""
    missing = [k for k in incompatible.missing_keys
               if not is_quantizer_key(k) and 'num_batches_tracked' not in k]
    for key in [k for k in incompatible.missing_keys if is_quantizer_key(k)]:
        incompatible.missing_keys.remove(key)
    if missing or incompatible.unexpected_keys:
        raise KeyError(
            f'{type(module).__name__}: the checkpoint does not fit this model '
            f'(quantizer parameters may be missing; these may not). '
            f'Missing: {missing or "none"}. Unexpected: '
            f'{list(incompatible.unexpected_keys) or "none"}.')


class QuantDetectorMixin:
    """Mixed into an mmdet detector after its ``__init__`` has built the model.

    Applies the model-level quantization settings (see
    :func:`~mmaqd.models.utils.apply_quant_cfg`), logs the per-layer table, and
    checks loaded checkpoints: an FP checkpoint may lack quantizer parameters (they
    are initialised from data) but any other missing or unexpected key is an error
    that names it.
    """

    def _init_quantization(self, quant_cfg: Optional[dict]) -> List[dict]:
        self.quant_cfg = quant_cfg
        rows = apply_quant_cfg(self, quant_cfg)
        MMLogger.get_current_instance().info(
            f'{type(self).__name__} quantized layers:\n{format_quant_table(rows)}')
        self.register_load_state_dict_post_hook(_check_loaded_keys)
        return rows
