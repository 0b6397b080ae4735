"""Integer engines of AQD detectors: QResNet -> QFPN -> AQD RetinaNet / FCOS head.

:func:`convert_detector` builds an :class:`IntegerDetector` from a trained (fake-quant)
AQDRetinaNet or AQDFCOS. Its forward pass maps the integer image to the head's
integer outputs; :meth:`IntegerDetector.real_outputs` multiplies them by their
units for mmdet's post-processing (sigmoid, decoding, NMS), the only float part.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmaqd.quant import LevelNorm, MultiLevelBN, SharedLevelBN

from . import ops
from .convert import ConversionError, EngineLinks, convert_add, convert_conv
from .layers import IntConv, IntMaxPool, IntReLU, IntUpsample

Units = List[torch.Tensor]


def _check_relu(module: nn.Module, name: str) -> None:
    if not isinstance(module, nn.ReLU):
        raise ConversionError(f'{name}: activation {type(module).__name__} has no integer form '
                              f'here (ReLU only)')


def level_norms(norm: Optional[nn.Module], num_levels: int, name: str) -> list:
    """The BN of every pyramid level of a (level) norm layer, for folding.

    Raises:
        ConversionError: For GroupNorm (per-image statistics: no integer form) or any
            other non-BN norm.
    """
    if norm is None:
        return [None] * num_levels
    if isinstance(norm, MultiLevelBN):
        return list(norm.bns)
    if isinstance(norm, SharedLevelBN):
        return [norm.bn] * num_levels
    if isinstance(norm, _BatchNorm):
        return [norm] * num_levels
    if isinstance(norm, nn.GroupNorm):
        raise ConversionError(f'{name}: GroupNorm normalises with per-image statistics and has '
                              f'no integer form; train the head with MultiLevelBN')
    kind = 'level norm' if isinstance(norm, LevelNorm) else 'norm'
    raise ConversionError(f'{name}: {kind} {type(norm).__name__} has no integer form')


def convert_conv_module(name: str, module: nn.Module, in_units: Optional[Units],
                        num_levels: int = 1, links: Optional[EngineLinks] = None) -> IntConv:
    """Integer form of an mmcv ConvModule / LevelConvModule (conv -> norm -> ReLU)."""
    if tuple(getattr(module, 'order', ('conv', 'norm', 'act'))) != ('conv', 'norm', 'act'):
        raise ConversionError(f'{name}: only conv -> norm -> act blocks are supported')
    norm = module.norm if module.with_norm else None
    if module.with_activation:
        _check_relu(module.activate, f'{name}.activate')
    return convert_conv(f'{name}.conv', module.conv, in_units,
                        level_norms(norm, num_levels, f'{name}.norm'), module.with_activation,
                        links=links)


class IntegerBlock(nn.Module):
    """Integer residual block (BasicBlock or Bottleneck of QResNet)."""

    def __init__(self, name: str, block: nn.Module, in_unit: torch.Tensor,
                 links: Optional[EngineLinks] = None) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        unit = [in_unit]
        names = ['conv1', 'conv2', 'conv3'] if hasattr(block, 'conv3') else ['conv1', 'conv2']
        for i, conv_name in enumerate(names):
            last = i == len(names) - 1
            layer = convert_conv(f'{name}.{conv_name}', getattr(block, conv_name), unit,
                                 [getattr(block, f'norm{i + 1}')], relu=not last, links=links)
            self.convs.append(layer)
            unit = [layer.out_unit[0]]
        if block.downsample is not None:
            conv, norm = block.downsample[0], block.downsample[1]
            self.downsample = convert_conv(f'{name}.downsample.0', conv, [in_unit], [norm],
                                           links=links)
            shortcut_unit = self.downsample.out_unit[0]
        else:
            self.downsample = None
            shortcut_unit = in_unit
        self.add = convert_add(f'{name}.add', block.add, unit[0], shortcut_unit, relu=True,
                               links=links)
        self.out_unit = self.add.out_unit

    def forward(self, x: torch.Tensor, arith: str) -> torch.Tensor:
        out = x
        for layer in self.convs:
            out = layer(out, arith=arith)
        identity = x if self.downsample is None else self.downsample(x, arith=arith)
        return self.add(out, identity, arith=arith)


class IntegerResNet(nn.Module):
    """Integer form of :class:`~mmaqd.models.QResNet`."""

    def __init__(self, backbone: nn.Module, name: str = 'backbone',
                 links: Optional[EngineLinks] = None) -> None:
        super().__init__()
        _check_relu(backbone.relu, f'{name}.relu')
        self.stem = convert_conv(f'{name}.conv1', backbone.conv1, None, [backbone.norm1],
                                 relu=True, links=links)
        pool = backbone.maxpool
        self.pool = IntMaxPool(pool.kernel_size, pool.stride, pool.padding)
        unit = self.stem.out_unit[0]
        self.stages = nn.ModuleList()
        for layer_name in backbone.res_layers:
            blocks = nn.ModuleList()
            for i, block in enumerate(getattr(backbone, layer_name)):
                blocks.append(IntegerBlock(f'{name}.{layer_name}.{i}', block, unit, links))
                unit = blocks[-1].out_unit
            self.stages.append(blocks)
        self.out_indices = tuple(backbone.out_indices)
        self.out_units = [self.stages[i][-1].out_unit for i in self.out_indices]

    def forward(self, x: torch.Tensor, arith: str) -> Tuple[torch.Tensor, ...]:
        x = self.pool(self.stem(x, arith=arith))
        outs = []
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x, arith)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class IntegerFPN(nn.Module):
    """Integer form of :class:`~mmaqd.models.QFPN`."""

    def __init__(self, neck: nn.Module, in_units: Units, name: str = 'neck',
                 links: Optional[EngineLinks] = None) -> None:
        super().__init__()
        self.start_level = neck.start_level
        self.backbone_end_level = neck.backbone_end_level
        self.num_outs = neck.num_outs
        self.add_extra_convs = neck.add_extra_convs
        self.relu_before_extra_convs = neck.relu_before_extra_convs
        self.laterals = nn.ModuleList(
            convert_conv_module(f'{name}.lateral_convs.{i}', m, [in_units[i + self.start_level]],
                                links=links)
            for i, m in enumerate(neck.lateral_convs))
        lateral_units = [m.out_unit[0] for m in self.laterals]
        self.adds = nn.ModuleList([None] * len(neck.top_down_adds))
        for i in range(len(lateral_units) - 1, 0, -1):
            self.adds[i - 1] = convert_add(f'{name}.top_down_adds.{i - 1}',
                                           neck.top_down_adds[i - 1], lateral_units[i - 1],
                                           lateral_units[i], relu=False, links=links)
            lateral_units[i - 1] = self.adds[i - 1].out_unit
        self.outputs = nn.ModuleList()
        units = []
        for i in range(len(lateral_units)):
            self.outputs.append(convert_conv_module(f'{name}.fpn_convs.{i}', neck.fpn_convs[i],
                                                    [lateral_units[i]], links=links))
            units.append(self.outputs[-1].out_unit[0])
        used = len(lateral_units)
        if self.num_outs > used and self.add_extra_convs:
            source = self._extra_source(lambda: in_units[self.backbone_end_level - 1],
                                        lambda: lateral_units[-1], lambda: units[-1])
            for i in range(used, self.num_outs):
                self.outputs.append(convert_conv_module(f'{name}.fpn_convs.{i}',
                                                        neck.fpn_convs[i], [source], links=links))
                source = self.outputs[-1].out_unit[0]
                units.append(source)
        elif self.num_outs > used:
            units += [units[-1]] * (self.num_outs - used)
        self.used = used
        self.out_units = units
        self.upsample = IntUpsample()
        self.extra_pool = IntMaxPool(1, 2, 0)
        self.extra_relu = IntReLU()

    def _extra_source(self, on_input, on_lateral, on_output):
        """What the first extra conv reads (mmdet's ``add_extra_convs``), for units or tensors."""
        return {'on_input': on_input, 'on_lateral': on_lateral,
                'on_output': on_output}[self.add_extra_convs]()

    def forward(self, inputs: Sequence[torch.Tensor], arith: str) -> Tuple[torch.Tensor, ...]:
        laterals = [layer(inputs[i + self.start_level], arith=arith)
                    for i, layer in enumerate(self.laterals)]
        for i in range(len(laterals) - 1, 0, -1):
            up = self.upsample(laterals[i], laterals[i - 1])
            laterals[i - 1] = self.adds[i - 1](laterals[i - 1], up, arith=arith)
        outs = [self.outputs[i](laterals[i], arith=arith) for i in range(self.used)]
        if self.num_outs > self.used:
            if not self.add_extra_convs:
                while len(outs) < self.num_outs:
                    outs.append(self.extra_pool(outs[-1]))
            else:
                source = self._extra_source(lambda: inputs[self.backbone_end_level - 1],
                                            lambda: laterals[-1], lambda: outs[-1])
                outs.append(self.outputs[self.used](source, arith=arith))
                for i in range(self.used + 1, self.num_outs):
                    prev = self.extra_relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.outputs[i](prev, arith=arith))
        return tuple(outs)


class IntegerDenseHead(nn.Module):
    """Integer form of AQDRetinaHead / AQDFCOSHead: per-level constants, shared weights.

    Outputs per level, in the order of the head's ``forward``: classification
    accumulators, box accumulators (FCOS: the per-level Scale is in their unit) and,
    for FCOS, centerness accumulators.
    """

    def __init__(self, head: nn.Module, in_units: Units, name: str = 'bbox_head',
                 links: Optional[EngineLinks] = None) -> None:
        super().__init__()
        self.num_levels = len(in_units)
        #: The head's output kinds (:data:`HEAD_OUTPUTS`).
        self.kinds = head_outputs(head)
        self.is_fcos = 'centerness' in self.kinds
        self.cls_tower = self._tower(head.cls_convs, in_units, f'{name}.cls_convs', links)
        self.reg_tower = self._tower(head.reg_convs, in_units, f'{name}.reg_convs', links)
        cls_units = self.cls_tower[-1].unit_list() if len(self.cls_tower) else in_units
        reg_units = self.reg_tower[-1].unit_list() if len(self.reg_tower) else in_units
        if self.is_fcos:
            scales = [float(s.scale.detach()) for s in head.scales]
            self.cls = convert_conv(f'{name}.conv_cls', head.conv_cls, cls_units, links=links)
            self.reg = convert_conv(f'{name}.conv_reg', head.conv_reg, reg_units,
                                    out_scale=scales, links=links)
            self.centerness_on_reg = head.centerness_on_reg
            self.centerness = convert_conv(f'{name}.conv_centerness', head.conv_centerness,
                                           reg_units if self.centerness_on_reg else cls_units,
                                           links=links)
        else:
            self.cls = convert_conv(f'{name}.retina_cls', head.retina_cls, cls_units, links=links)
            self.reg = convert_conv(f'{name}.retina_reg', head.retina_reg, reg_units, links=links)

    def _tower(self, convs: nn.ModuleList, in_units: Units, name: str,
               links: Optional[EngineLinks]) -> nn.ModuleList:
        tower = nn.ModuleList()
        units = in_units
        for i, block in enumerate(convs):
            layer = convert_conv_module(f'{name}.{i}', block, units, self.num_levels, links)
            tower.append(layer)
            units = layer.unit_list()
        return tower

    def forward(self, feats: Sequence[torch.Tensor], arith: str) -> Tuple[List[torch.Tensor], ...]:
        if len(feats) != self.num_levels:
            raise ValueError(f'IntegerDenseHead: got {len(feats)} levels, built for '
                             f'{self.num_levels}')
        outputs = ([], [], []) if self.is_fcos else ([], [])
        for level, x in enumerate(feats):
            cls_feat, reg_feat = x, x
            for layer in self.cls_tower:
                cls_feat = layer(cls_feat, level, arith)
            for layer in self.reg_tower:
                reg_feat = layer(reg_feat, level, arith)
            outputs[0].append(self.cls(cls_feat, level, arith))
            outputs[1].append(self.reg(reg_feat, level, arith))
            if self.is_fcos:
                outputs[2].append(self.centerness(
                    reg_feat if self.centerness_on_reg else cls_feat, level, arith))
        return outputs

    def output_units(self) -> Tuple[Units, ...]:
        """Per output kind, per level: the real unit of the integer outputs."""
        layers = (self.cls, self.reg, self.centerness) if self.is_fcos else (self.cls, self.reg)
        return tuple(layer.unit_list() for layer in layers)


class IntegerDetector(nn.Module):
    """An AQD detector's integer engine: integer image -> integer head outputs.

    Args:
        model (nn.Module): A trained AQDRetinaNet or AQDFCOS (fake-quant), in eval mode.
        links (EngineLinks, optional): Collects the units and requantizations that
            integer-aware QAT gives the fake-quant layers.
    """

    def __init__(self, model: nn.Module, links: Optional[EngineLinks] = None) -> None:
        super().__init__()
        check_integer_preprocessor(model)
        with torch.no_grad():
            self.backbone = IntegerResNet(model.backbone, links=links)
            self.neck = IntegerFPN(model.neck, self.backbone.out_units, links=links)
            self.head = IntegerDenseHead(model.bbox_head, self.neck.out_units, links=links)

    def forward(self, image: torch.Tensor, arith: str = 'int') -> Tuple[List[torch.Tensor], ...]:
        """Run the engine.

        Args:
            image (Tensor): The integer image ``pixel - mean`` (N, 3, H, W), any
                integer dtype or float holding integers.
            arith (str): ``'int'`` (the engine, int64) or ``'float'`` (the
                deploy-mode simulation, float64). Defaults to ``'int'``.

        Returns:
            tuple[list[Tensor]]: The head's outputs per level, as integers.
        """
        ops.check_arith(arith)
        x = integer_image(image, arith)
        feats = self.neck(self.backbone(x, arith), arith)
        return self.head(feats, arith)

    def real_outputs(self,
                     outputs: Tuple[List[torch.Tensor], ...]) -> Tuple[List[torch.Tensor], ...]:
        """Multiply integer head outputs by their units (float32, for post-processing)."""
        return real_values(outputs, self.head.output_units())


def real_values(outputs: Sequence[Sequence[torch.Tensor]],
                units: Sequence[Sequence[torch.Tensor]]) -> Tuple[List[torch.Tensor], ...]:
    """Per output kind and level, integer values times their ``(C,)`` unit, in float32."""
    return tuple([(v.double() * u.view(1, -1, 1, 1)).float() for v, u in zip(vals, us)]
                 for vals, us in zip(outputs, units))


#: The raw outputs of each AQD head type, in the order of its ``forward``.
HEAD_OUTPUTS = {'AQDRetinaHead': ('cls_score', 'bbox_pred'),
                'AQDFCOSHead': ('cls_score', 'bbox_pred', 'centerness')}


def head_outputs(head: nn.Module) -> Tuple[str, ...]:
    """The names of ``head``'s raw outputs, in order (the one head-kind table).

    Args:
        head (nn.Module): An AQD head (or a subclass of one).

    Returns:
        tuple[str]: E.g. ``('cls_score', 'bbox_pred')``.

    Raises:
        ConversionError: For a head type without integer form.
    """
    for cls in type(head).__mro__:
        if cls.__name__ in HEAD_OUTPUTS:
            return HEAD_OUTPUTS[cls.__name__]
    raise ConversionError(f'{type(head).__name__} has no integer form; expected one of '
                          f'{sorted(HEAD_OUTPUTS)} (or a subclass)')


def integer_image(image: torch.Tensor, arith: str) -> torch.Tensor:
    """Check that ``image`` holds integers and convert it to the arithmetic's dtype."""
    if image.is_floating_point():
        if not torch.equal(image, torch.round(image)):
            raise ConversionError('the engine input is not an integer image: the data '
                                  'preprocessor must use an integer mean and std 1')
    return ops.as_arith(image, arith)


def check_integer_preprocessor(model: nn.Module) -> None:
    """Refuse a model whose preprocessing does not produce an integer image."""
    pre = getattr(model, 'data_preprocessor', None)
    mean = getattr(pre, 'mean', None)
    std = getattr(pre, 'std', None)
    if mean is None or std is None:
        return
    if not torch.equal(mean, torch.round(mean)) or not torch.all(std == 1):
        raise ConversionError(f'data_preprocessor mean {mean.flatten().tolist()} / std '
                              f'{std.flatten().tolist()} do not give an integer image: integer '
                              f'inference needs an integer mean and std 1')


def convert_detector(model: nn.Module, links: Optional[EngineLinks] = None) -> IntegerDetector:
    """Convert a trained AQD detector to its integer engine (the model is not changed).

    Args:
        model (nn.Module): AQDRetinaNet / AQDFCOS with QResNet, QFPN and an AQD head.
        links (EngineLinks, optional): Collects what integer-aware QAT needs.

    Returns:
        IntegerDetector: The engine (eval mode).

    Raises:
        ConversionError: If some part has no integer form; the message names it.
    """
    for part, expected in (('backbone', 'QResNet'), ('neck', 'QFPN')):
        got = type(getattr(model, part, None)).__name__
        if got != expected:
            raise ConversionError(f'{part} is {got}; integer conversion supports {expected}')
    if type(model.bbox_head).__name__ not in ('AQDRetinaHead', 'AQDFCOSHead'):
        raise ConversionError(f'bbox_head is {type(model.bbox_head).__name__}; integer '
                              f'conversion supports AQDRetinaHead and AQDFCOSHead')
    if model.training:
        raise ConversionError('convert a model in eval mode (BN uses running statistics)')
    return IntegerDetector(model, links).eval()


__all__: List[str] = ['IntegerDetector', 'convert_detector', 'check_integer_preprocessor',
                      'integer_image', 'IntegerResNet', 'IntegerFPN', 'IntegerDenseHead']
