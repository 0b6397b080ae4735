"""What a quantized detector adds to an mmdet detector: bits by name, checkpoint checks."""
from typing import List, Optional

from mmengine.logging import MMLogger
from torch import nn

from mmaqd.models.utils import apply_quant_cfg, format_quant_table
from mmaqd.quant import QConv

# State-dict entries that an FP checkpoint cannot have: quantizer parameters learned
# from data, and the bit widths QConv saves with its state.
_QUANTIZER_KEY_PARTS = ('weight_quantizer.', 'input_quantizers.')
_BITS_KEY_SUFFIX = '._extra_state'


def is_quantizer_key(key: str) -> bool:
    """Whether a state-dict key belongs to quantization (step, clip value, observer, bits)."""
    return any(part in key for part in _QUANTIZER_KEY_PARTS) or key.endswith(_BITS_KEY_SUFFIX)


def _check_loaded_bits(module: nn.Module) -> None:
    """Refuse loaded quantizer scales that were saved at other bit widths."""
    wrong = []
    for name, conv in module.named_modules():
        if isinstance(conv, QConv) and conv.loaded_bits is not None:
            # A layer saved unquantized has no scales to misread.
            saved_quantized = any(b not in (None, 32) for b in conv.loaded_bits)
            if saved_quantized and conv.loaded_bits != (conv.w_bits, conv.a_bits):
                wrong.append(f'{name} saved at w{conv.loaded_bits[0]}/a{conv.loaded_bits[1]}, '
                             f'now w{conv.w_bits}/a{conv.a_bits}')
            conv.loaded_bits = None
    if wrong:
        raise ValueError(
            f'{type(module).__name__}: the checkpoint\'s quantizer scales belong to other bit '
            f'widths ({len(wrong)} layers: {"; ".join(wrong[:5])}'
            f'{"; ..." if len(wrong) > 5 else ""}). Configure the same bits, resume with the '
            f'BitWidthScheduleHook that saved it, or start from an FP checkpoint.')


def _check_loaded_keys(module: nn.Module, incompatible) -> None:
    """Post-load hook: quantizer keys may be missing, nothing else may be off, bits must match."""
    _check_loaded_bits(module)
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
