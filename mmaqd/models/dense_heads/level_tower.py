"""Shared-conv, per-level-norm head towers used by the AQD heads."""
import copy
from typing import Iterable, Optional, Tuple

from mmdet.registry import MODELS
from torch import Tensor, nn

from mmaqd.models.layers.level_conv_module import LevelConvModule
from mmaqd.quant import LevelNorm, QConv


def resolve_num_levels(num_levels: Optional[int], strides, head: str) -> int:
    """The head's pyramid-level count: one per stride, and ``num_levels`` must agree.

    Args:
        num_levels (int, optional): The count the config asked for, if any.
        strides (sequence[int]): The head's strides, one per level.
        head (str): Head name for error messages.

    Returns:
        int: The number of levels.
    """
    if num_levels is not None and num_levels != len(strides):
        raise ValueError(f'{head}: num_levels={num_levels} does not match the '
                         f'{len(strides)} strides {list(strides)}')
    return len(strides)


def level_norm_cfg(norm_cfg: Optional[dict], num_levels: int, head: str) -> Optional[dict]:
    """Complete a head's ``norm_cfg`` with the number of pyramid levels.

    Args:
        norm_cfg (dict, optional): The head's norm config.
        num_levels (int): Number of pyramid levels the head is applied to.
        head (str): Head name for error messages.

    Returns:
        dict, optional: The config, with ``num_levels`` set for a level norm
        (multi-level BN and its flavours).
    """
    return _with_num_levels(norm_cfg, LevelNorm, num_levels, head, 'norm_cfg')


def level_conv_cfg(conv_cfg: Optional[dict], num_levels: int, head: str) -> Optional[dict]:
    """Complete a head's ``conv_cfg`` with the number of pyramid levels.

    A :class:`~mmaqd.quant.QConv` shared by all levels gets one input quantizer per
    level (AQD: private activation quantizers, like the private BNs).

    Args:
        conv_cfg (dict, optional): The head's conv config.
        num_levels (int): Number of pyramid levels the head is applied to.
        head (str): Head name for error messages.

    Returns:
        dict, optional: The config, with ``num_levels`` set for a QConv.
    """
    return _with_num_levels(conv_cfg, QConv, num_levels, head, 'conv_cfg')


def _with_num_levels(cfg: Optional[dict], base: type, num_levels: int, head: str,
                     key: str) -> Optional[dict]:
    if cfg is None:
        return cfg
    layer_type = cfg.get('type')
    layer_cls = MODELS.get(layer_type) if isinstance(layer_type, str) else layer_type
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, base)):
        return cfg
    cfg = copy.deepcopy(dict(cfg))
    given = cfg.setdefault('num_levels', num_levels)
    if given != num_levels:
        raise ValueError(f'{head}: {key} num_levels={given} does not match the head\'s '
                         f'{num_levels} pyramid levels')
    return cfg


def build_tower(in_channels: int, feat_channels: int, stacked_convs: int,
                conv_cfg: Optional[dict], norm_cfg: Optional[dict],
                bias='auto') -> nn.ModuleList:
    """A stack of 3x3 :class:`LevelConvModule` blocks shared by all levels."""
    return nn.ModuleList(
        LevelConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, stride=1,
                        padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, bias=bias)
        for i in range(stacked_convs))


def run_tower(tower: nn.ModuleList, x: Tensor, level: int) -> Tensor:
    """Apply a tower to the features of pyramid level ``level``."""
    for block in tower:
        x = block(x, level)
    return x


def check_num_levels(feats: Iterable[Tensor], num_levels: int, head: str) -> Tuple[Tensor, ...]:
    """The levels of a feature pyramid (any iterable) as a tuple, of the head's level count.

    Raises:
        ValueError: If the pyramid's depth differs from ``num_levels``.
    """
    feats = tuple(feats)
    if len(feats) != num_levels:
        raise ValueError(f'{head}: got {len(feats)} feature levels, the head was built for '
                         f'num_levels={num_levels} (per-level norms)')
    return feats
