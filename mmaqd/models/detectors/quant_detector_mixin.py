"""What a quantized detector adds to an mmdet detector: bits by name, checkpoint checks."""
import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import MMLogger
from torch import nn

from mmaqd.models.utils import apply_quant_cfg, format_quant_table
from mmaqd.quant import QConv
from mmdet.models.utils import unpack_gt_instances

from .distillation import build_distiller

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


def _check_checkpoint_fits(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook: refuse a checkpoint that does not fit, and say what is initialised.

    mmengine loads checkpoints with ``strict=False`` and only logs size mismatches,
    missing and unexpected keys, leaving those layers random. Here every one of them
    is an error naming the keys, except the quantizer entries an FP checkpoint
    cannot have (learned steps, clip values, observers, bit widths): those are
    initialised from data, and a warning says which and when.
    """
    expected = {prefix + k: v for k, v in module.state_dict().items()}
    given = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    mismatched = [f'{k} (checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)})'
                  for k, v in given.items()
                  if k in expected and isinstance(v, torch.Tensor)
                  and isinstance(expected[k], torch.Tensor) and v.shape != expected[k].shape]
    unexpected = [k for k in given if k not in expected]
    absent = [k for k in expected if k not in given and 'num_batches_tracked' not in k]
    missing = [k for k in absent if not is_quantizer_key(k)]
    if mismatched or unexpected or missing:
        def listed(keys: List[str]) -> str:
            return (f'{len(keys)}: {", ".join(keys[:6])}{", ..." if len(keys) > 6 else ""}'
                    if keys else 'none')

        raise ValueError(
            f'{type(module).__name__}: the checkpoint does not fit this model. Size '
            f'mismatches {listed(mismatched)}. Missing {listed(missing)}. Unexpected '
            f'{listed(unexpected)}. (Only quantizer entries may be missing: an FP checkpoint '
            f'has none.)')
    learned = [k for k in absent if is_quantizer_key(k) and not k.endswith(_BITS_KEY_SUFFIX)]
    if learned:
        layers = sorted({k.split('.weight_quantizer.')[0].split('.input_quantizers.')[0]
                         for k in learned})
        MMLogger.get_current_instance().warning(
            f'{type(module).__name__}: the checkpoint has no quantizer state for {len(layers)} '
            f'layers ({", ".join(layers[:3])}{", ..." if len(layers) > 3 else ""}; '
            f'{len(learned)} entries): each quantizer initialises its scale from the first '
            f'batch it sees (LSQ: 2 * mean|x| / sqrt(Qp)). That is the first training batch '
            f'(or QuantCalibrationHook\'s calibration batches); when testing such a model '
            f'it is the first test batch, so test a fine-tuned checkpoint instead.')


def _check_loaded_keys(module: nn.Module, incompatible) -> None:
    """Post-load hook: the bits must match; quantizer keys may be missing (strict loads)."""
    _check_loaded_bits(module)
    for key in [k for k in incompatible.missing_keys if is_quantizer_key(k)]:
        incompatible.missing_keys.remove(key)


def check_level_strides(feats: Sequence[torch.Tensor], input_size: Sequence[int],
                        strides: Sequence, head: str) -> None:
    """Refuse head strides that are not those of the feature maps.

    A level of stride ``s`` computed by stride-2 convs and poolings with padding
    (ResNet, FPN) is ``ceil(H / s) x ceil(W / s)`` for an ``H x W`` input. Wrong
    strides of the right count (``[4, ..., 64]`` with an FPN from P3) train and
    test without an error, with every anchor or point in the wrong place.

    Args:
        feats (sequence[Tensor]): The neck's outputs, (N, C, h, w) each.
        input_size (sequence[int]): ``(H, W)`` of the batch.
        strides (sequence): The head's strides, an int or ``(w, h)`` pair per level.
        head (str): The head's name, for the message.

    Raises:
        ValueError: If the number of levels or a stride does not match.
    """
    pairs = [(s, s) if isinstance(s, (int, float)) else tuple(s) for s in strides]
    height, width = int(input_size[0]), int(input_size[1])
    sizes = [tuple(f.shape[-2:]) for f in feats]
    fits = len(pairs) == len(sizes) and all(
        (h, w) == (math.ceil(height / sh), math.ceil(width / sw))
        for (sw, sh), (h, w) in zip(pairs, sizes))
    if not fits:
        actual = [round(height / h) for h, _ in sizes]
        raise ValueError(
            f'{head}: strides {[p[0] for p in pairs]} do not match the {len(sizes)} feature '
            f'maps {["x".join(map(str, size)) for size in sizes]} of a {height}x{width} input '
            f'(strides {actual}); set the head\'s strides (RetinaNet: '
            f'anchor_generator.strides, FCOS: strides) to the neck\'s')


class QuantDetectorMixin:
    """Mixed into an mmdet detector after its ``__init__`` has built the model.

    Applies the model-level quantization settings (see
    :func:`~mmaqd.models.utils.apply_quant_cfg`), logs the per-layer table, adds
    the distillation losses of an optional ``distill`` teacher
    (:class:`~mmaqd.models.detectors.distillation.Distiller`), and
    checks every checkpoint loaded into the model (train ``load_from``, resume,
    test, the tools): an FP checkpoint may lack quantizer parameters (they are
    initialised from data, and a warning says so) but a size mismatch, any other
    missing key or an unexpected key is an error that names them.
    """

    def _init_quantization(self, quant_cfg: Optional[dict],
                           distill: Optional[dict] = None) -> List[dict]:
        self.quant_cfg = quant_cfg
        self.integer_backend = None
        self.distiller = build_distiller(distill)
        rows = apply_quant_cfg(self, quant_cfg)
        if rows:
            MMLogger.get_current_instance().info(
                f'{type(self).__name__} quantized layers:\n{format_quant_table(rows)}')
        self.register_load_state_dict_pre_hook(_check_checkpoint_fits)
        self.register_load_state_dict_post_hook(_check_loaded_keys)
        return rows

    def loss(self, batch_inputs: torch.Tensor, batch_data_samples: list) -> dict:
        """mmdet's losses, plus the distillation losses when a teacher is configured."""
        if self.distiller is None:
            return super().loss(batch_inputs, batch_data_samples)
        feats = self.extract_feat(batch_inputs)
        outs = self.bbox_head(feats)
        gt_instances, gt_ignore, metas = unpack_gt_instances(batch_data_samples)
        losses = self.bbox_head.loss_by_feat(*outs, gt_instances, metas, gt_ignore)
        teacher_feats, teacher_outs = self.distiller.teacher_outputs(batch_inputs)
        losses.update(self.distiller.losses(feats, outs[0], teacher_feats, teacher_outs[0]))
        return losses

    def _apply(self, fn, *args, **kwargs):
        """``to`` / ``cuda`` / ``double`` reach the teacher too (it is no submodule)."""
        out = super()._apply(fn, *args, **kwargs)
        distiller = getattr(self, 'distiller', None)
        if distiller is not None and distiller.teacher is not None:
            distiller.teacher._apply(fn, *args, **kwargs)
        return out

    def set_integer_backend(self, backend: Optional[Callable[[torch.Tensor], tuple]]) -> None:
        """Predict with an integer backend instead of the fake-quant layers (None: undo).

        Args:
            backend (callable, optional): Maps the preprocessed batch ``(N, 3, H, W)``
                to the head's raw outputs in real units (what the head's
                ``raw_forward`` gives), e.g. the integer engine's outputs times their
                units. The head's ``finish_raw``, ``predict_by_feat`` (decoding, NMS)
                and mmdet's evaluator are unchanged. A plain callable: it is not a
                submodule and never enters the state dict.
        """
        if backend is not None and not callable(backend):
            raise TypeError(f'{type(self).__name__}: the integer backend must be callable, '
                            f'got {type(backend).__name__}')
        self.integer_backend = backend

    def predict(self, batch_inputs: torch.Tensor, batch_data_samples: list,
                rescale: bool = True) -> list:
        """mmdet's ``predict``, through the integer backend when one is set."""
        if self.integer_backend is None:
            return super().predict(batch_inputs, batch_data_samples, rescale=rescale)
        outs = self._forward(batch_inputs)
        metas = [sample.metainfo for sample in batch_data_samples]
        results = self.bbox_head.predict_by_feat(*outs, batch_img_metas=metas, rescale=rescale)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs: torch.Tensor, batch_data_samples=None) -> tuple:
        """mmdet's tensor-mode forward, through the integer backend when one is set."""
        if self.integer_backend is None:
            return super()._forward(batch_inputs, batch_data_samples)
        return self.bbox_head.finish_raw(self.integer_backend(batch_inputs))

    def extract_feat(self, batch_inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The neck's features, after checking them against the head's strides.

        Args:
            batch_inputs (Tensor): Images, (N, 3, H, W).

        Returns:
            tuple[Tensor]: One feature map per pyramid level.
        """
        feats = super().extract_feat(batch_inputs)
        head = getattr(self, 'bbox_head', None)
        generator = getattr(head, 'prior_generator', None)
        if generator is not None:
            check_level_strides(feats, batch_inputs.shape[-2:], generator.strides,
                                type(head).__name__)
        return feats
