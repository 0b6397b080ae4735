"""Shared-conv, per-level-norm head towers used by the AQD heads."""
import copy
from typing import Optional

from mmdet.registry import MODELS
from torch import Tensor, nn

from mmaqd.models.layers.level_conv_module import LevelConvModule
from mmaqd.quant import LevelNorm


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
    if norm_cfg is None:
        return norm_cfg
    norm_type = norm_cfg.get('type')
    norm_cls = MODELS.get(norm_type) if isinstance(norm_type, str) else norm_type
    if not (isinstance(norm_cls, type) and issubclass(norm_cls, LevelNorm)):
        return norm_cfg
    cfg = copy.deepcopy(dict(norm_cfg))
    given = cfg.setdefault('num_levels', num_levels)
    if given != num_levels:
        raise ValueError(f'{head}: norm_cfg num_levels={given} does not match the head\'s '
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


def check_num_levels(feats: tuple, num_levels: int, head: str) -> None:
    """Refuse a feature pyramid whose depth differs from the head's level count."""
    if len(feats) != num_levels:
        raise ValueError(f'{head}: got {len(feats)} feature levels, the head was built for '
                         f'num_levels={num_levels} (per-level norms)')
