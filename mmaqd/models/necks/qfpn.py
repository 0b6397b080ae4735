"""FPN with quantized convolutions and quantized top-down adds."""
from typing import Optional, Tuple

import torch.nn.functional as F
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import Tensor, nn

from mmaqd.quant import QAdd


@MODELS.register_module()
class QFPN(FPN):
    """mmdet's FPN with ``QConv`` convs, ``QBN`` norms and ``QAdd`` top-down adds.

    AQD's FPN has conv -> BN -> ReLU on every lateral, output and extra conv, so
    every quantized input is non-negative; those are the defaults here. Upsampling
    must be nearest (an index copy, exact on integers). With 32 bits everywhere it
    computes exactly what :class:`FPN` computes with the same weights, and its
    state-dict keys are FPN's plus the quantizers'.

    Args:
        in_channels (list[int]): Channels of the backbone outputs.
        out_channels (int): Channels of every pyramid level.
        num_outs (int): Number of pyramid levels.
        conv_cfg (dict): Conv config. Defaults to ``dict(type='QConv')``.
        norm_cfg (dict): Norm config. Defaults to ``dict(type='QBN')``.
        act_cfg (dict): Activation. Defaults to ``dict(type='ReLU')``.
        **kwargs: Everything else :class:`FPN` takes.
    """

    def __init__(self,
                 in_channels,
                 out_channels: int,
                 num_outs: int,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(
            in_channels,
            out_channels,
            num_outs,
            conv_cfg=dict(type='QConv') if conv_cfg is None else conv_cfg,
            norm_cfg=dict(type='QBN', requires_grad=True) if norm_cfg is None else norm_cfg,
            act_cfg=dict(type='ReLU') if act_cfg is None else act_cfg,
            **kwargs)
        if self.upsample_cfg.get('mode', 'nearest') != 'nearest':
            raise ValueError(f'QFPN: upsample mode {self.upsample_cfg["mode"]!r} is not '
                             f'integer; use nearest')
        self.top_down_adds = nn.ModuleList(QAdd() for _ in range(len(self.lateral_convs) - 1))

    def forward(self, inputs: Tuple[Tensor, ...]) -> tuple:
        """FPN.forward with the top-down adds done by ``top_down_adds``.

        Args:
            inputs (tuple[Tensor]): Backbone features.

        Returns:
            tuple[Tensor]: The pyramid, finest level first.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'QFPN: got {len(inputs)} inputs, expected '
                             f'{len(self.in_channels)}')
        laterals = [conv(inputs[i + self.start_level])
                    for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                   **self.upsample_cfg)
            laterals[i - 1] = self.top_down_adds[i - 1](laterals[i - 1], up)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals))]
        if self.num_outs > len(outs):
            outs.extend(self._extra_levels(inputs, laterals, outs))
        return tuple(outs)

    def _extra_levels(self, inputs, laterals, outs) -> list:
        used = len(laterals)
        if not self.add_extra_convs:
            extra = [F.max_pool2d(outs[-1], 1, stride=2)]
            while len(extra) < self.num_outs - used:
                extra.append(F.max_pool2d(extra[-1], 1, stride=2))
            return extra
        source = {
            'on_input': lambda: inputs[self.backbone_end_level - 1],
            'on_lateral': lambda: laterals[-1],
            'on_output': lambda: outs[-1],
        }[self.add_extra_convs]()
        extra = [self.fpn_convs[used](source)]
        for i in range(used + 1, self.num_outs):
            extra.append(self.fpn_convs[i](F.relu(extra[-1]) if self.relu_before_extra_convs
                                           else extra[-1]))
        return extra
