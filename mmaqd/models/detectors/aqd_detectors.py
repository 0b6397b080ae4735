"""RetinaNet and FCOS with model-level quantization settings."""
from typing import Optional

from mmdet.models.detectors import FCOS, RetinaNet
from mmdet.registry import MODELS

from .quant_detector_mixin import QuantDetectorMixin


@MODELS.register_module()
class AQDRetinaNet(QuantDetectorMixin, RetinaNet):
    """mmdet's RetinaNet plus ``quant_cfg``: bits and quantizer type by module name.

    Args:
        quant_cfg (dict, optional): See :func:`~mmaqd.models.utils.apply_quant_cfg`.
        distill (dict, optional): Distillation from a teacher: ``teacher_config``,
            ``teacher_ckpt`` and the loss weights of
            :class:`~mmaqd.models.detectors.distillation.Distiller`.
        **kwargs: Everything :class:`RetinaNet` takes.
    """

    def __init__(self, *args, quant_cfg: Optional[dict] = None, distill: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_quantization(quant_cfg, distill)


@MODELS.register_module()
class AQDFCOS(QuantDetectorMixin, FCOS):
    """mmdet's FCOS plus ``quant_cfg``: bits and quantizer type by module name.

    Args:
        quant_cfg (dict, optional): See :func:`~mmaqd.models.utils.apply_quant_cfg`.
        distill (dict, optional): Distillation from a teacher: ``teacher_config``,
            ``teacher_ckpt`` and the loss weights of
            :class:`~mmaqd.models.detectors.distillation.Distiller`.
        **kwargs: Everything :class:`FCOS` takes.
    """

    def __init__(self, *args, quant_cfg: Optional[dict] = None, distill: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_quantization(quant_cfg, distill)
