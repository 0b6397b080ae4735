"""ResNet with quantized convolutions, quantized BN and quantized residual adds."""
from typing import Optional

import torch.utils.checkpoint as cp
from mmdet.models.backbones import ResNet
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.registry import MODELS
from torch import Tensor

from mmaqd.quant import QAdd


def _residual_forward(block, x: Tensor, residual) -> Tensor:
    """``relu(block.add(residual(x), shortcut(x)))``, with mmdet's checkpointing option."""

    def _inner_forward(x: Tensor) -> Tensor:
        identity = x if block.downsample is None else block.downsample(x)
        return block.add(residual(x), identity)

    out = cp.checkpoint(_inner_forward, x, use_reentrant=False) \
        if block.with_cp and x.requires_grad else _inner_forward(x)
    return block.relu(out)


class QBasicBlock(BasicBlock):
    """mmdet's BasicBlock whose residual add is a :class:`~mmaqd.quant.QAdd`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add = QAdd()

    def forward(self, x: Tensor) -> Tensor:
        """conv-BN-ReLU, conv-BN, quantized add with the shortcut, ReLU."""
        return _residual_forward(
            self, x, lambda x: self.norm2(self.conv2(self.relu(self.norm1(self.conv1(x))))))


class QBottleneck(Bottleneck):
    """mmdet's Bottleneck whose residual add is a :class:`~mmaqd.quant.QAdd`.

    QResNet refuses plugins and DCN (they have no integer form here).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add = QAdd()

    def forward(self, x: Tensor) -> Tensor:
        """Three conv-BN(-ReLU) stages, quantized add with the shortcut, ReLU."""

        def residual(x: Tensor) -> Tensor:
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.relu(self.norm2(self.conv2(out)))
            return self.norm3(self.conv3(out))

        return _residual_forward(self, x, residual)


@MODELS.register_module()
class QResNet(ResNet):
    """mmdet's ResNet with every conv a ``QConv``, every BN a ``QBN`` and ``QAdd`` skips.

    Bits are set afterwards by the detector's quantization settings (by module name);
    with 32 bits everywhere it computes exactly what :class:`ResNet` computes with
    the same weights, and its state-dict keys are ResNet's plus the quantizers', so
    an FP ResNet checkpoint loads into it.

    The stem conv's input is the integer image (integer mean, std 1), so it has no
    input quantizer (``stem_input_quant=None``).

    Args:
        conv_cfg (dict): Conv config. Defaults to ``dict(type='QConv')``.
        norm_cfg (dict): Norm config. Defaults to ``dict(type='QBN')``.
        stem_input_quant (str, optional): ``input_quant`` of the stem conv.
            Defaults to None.
        **kwargs: Everything else :class:`ResNet` takes.
    """

    arch_settings = {
        18: (QBasicBlock, (2, 2, 2, 2)),
        34: (QBasicBlock, (3, 4, 6, 3)),
        50: (QBottleneck, (3, 4, 6, 3)),
        101: (QBottleneck, (3, 4, 23, 3)),
        152: (QBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 *args,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 stem_input_quant: Optional[str] = None,
                 **kwargs) -> None:
        for option in ('deep_stem', 'dcn', 'plugins'):
            if kwargs.get(option):
                raise ValueError(f'QResNet: {option} is not supported (no integer form)')
        self.stem_input_quant = stem_input_quant
        super().__init__(
            *args,
            conv_cfg=dict(type='QConv') if conv_cfg is None else conv_cfg,
            norm_cfg=dict(type='QBN', requires_grad=True) if norm_cfg is None else norm_cfg,
            **kwargs)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        conv_cfg = self.conv_cfg
        self.conv_cfg = dict(conv_cfg, input_quant=self.stem_input_quant)
        try:
            super()._make_stem_layer(in_channels, stem_channels)
        finally:
            self.conv_cfg = conv_cfg
