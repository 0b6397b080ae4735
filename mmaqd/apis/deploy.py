"""Deployment helpers: the metadata a detector file carries, the FP ONNX baseline."""
from typing import Any, Dict, List, Optional

import torch
from mmengine.config import Config
from torch import nn

#: Version of the metadata layout below (read by :mod:`mmaqd_deploy`, which keeps its
#: own copy of the string: it does not import mmaqd).
METADATA_FORMAT = 'mmaqd-detector-1'


def _plain(value: Any) -> Any:
    """Tensors and tuples as lists, config dicts as dicts (JSON-ready)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _resize(cfg: Config) -> Optional[Dict[str, Any]]:
    """The test pipeline's Resize (``scale`` as (w, h), or ``scale_factor``), if any."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for transform in pipeline:
        if transform.get('type') == 'Resize':
            return {key: _plain(transform[key]) for key in ('scale', 'scale_factor', 'keep_ratio')
                    if key in transform}
    return None


def _classes(cfg: Config, num_classes: int) -> List[str]:
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    while 'dataset' in dataset and 'metainfo' not in dataset:
        dataset = dataset['dataset']
    classes = (dataset.get('metainfo') or {}).get('classes')
    return [str(c) for c in classes] if classes else [str(i) for i in range(num_classes)]


def deploy_metadata(cfg: Config, model: nn.Module) -> Dict[str, Any]:
    """The metadata a runner needs besides the graph (read from the built model).

    Args:
        cfg (Config): The detector's config (test pipeline, classes, bits).
        model (nn.Module): The built AQDRetinaNet / AQDFCOS.

    Returns:
        dict: ``format``, ``head`` (``retinanet`` / ``fcos``), ``classes``, ``strides``,
        the priors (RetinaNet: per-level ``base_anchors``; FCOS: ``point_offset``),
        the box coder, the head's ``test_cfg``, ``mean``, ``channel_order`` (of the
        uint8 input), ``resize``, ``size_divisor`` and ``bits``.

    Raises:
        ValueError: For a head that is neither RetinaNet- nor FCOS-like.
    """
    head = model.bbox_head
    pre = model.data_preprocessor
    meta: Dict[str, Any] = {
        'format': METADATA_FORMAT,
        'classes': _classes(cfg, head.num_classes),
        'mean': [float(m) for m in pre.mean.flatten()],
        'channel_order': 'RGB' if getattr(pre, '_channel_conversion', False) else 'BGR',
        'resize': _resize(cfg),
        'size_divisor': int(getattr(pre, 'pad_size_divisor', 1)),
        'test_cfg': _plain(dict(head.test_cfg)),
    }
    quant = cfg.model.get('quant_cfg')
    if quant is not None:
        meta['bits'] = {'w_bits': quant.get('w_bits'), 'a_bits': quant.get('a_bits')}
    generator = head.prior_generator
    meta['strides'] = [int(s[0]) for s in generator.strides]
    coder = head.bbox_coder
    if hasattr(head, 'conv_centerness'):
        meta['head'] = 'fcos'
        meta['point_offset'] = float(generator.offset)
        meta['norm_on_bbox'] = bool(head.norm_on_bbox)
        meta['bbox_coder'] = {'type': type(coder).__name__,
                              'clip_border': bool(coder.clip_border)}
    elif hasattr(generator, 'base_anchors'):
        meta['head'] = 'retinanet'
        meta['base_anchors'] = [_plain(a) for a in generator.base_anchors]
        meta['bbox_coder'] = {'type': type(coder).__name__, 'means': _plain(coder.means),
                              'stds': _plain(coder.stds), 'clip_border': bool(coder.clip_border),
                              'add_ctr_clamp': bool(coder.add_ctr_clamp),
                              'ctr_clamp': int(coder.ctr_clamp)}
    else:
        raise ValueError(f'{type(head).__name__}: no deploy metadata for this head (RetinaNet- '
                         f'or FCOS-like heads only)')
    return meta


class _HeadOutputs(nn.Module):
    """A detector's backbone, neck and head as one module with flat tensor outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple:
        outputs = self.model.bbox_head(self.model.neck(self.model.backbone(image)))
        return tuple(t for kind in outputs for t in kind)


def export_float_onnx(model: nn.Module, path: str, size: int) -> None:
    """Export an FP detector (image ``pixel - mean`` -> head outputs) with torch.onnx.

    The FP baseline of the deployment benchmark: what a user gets from
    ``torch.onnx.export`` without quantization (opset 17, fixed ``size`` x ``size``).
    """
    image = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(_HeadOutputs(model).eval(), (image, ), path, opset_version=17,
                          input_names=['image'], dynamo=False)
