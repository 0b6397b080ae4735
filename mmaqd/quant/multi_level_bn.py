"""Batch normalisation for detection heads whose convs are shared across pyramid levels."""
from typing import Optional

import torch
from torch import nn

from .qbn import QBN


class LevelNorm(nn.Module):
    """Base of norms called as ``forward(x, level)`` with an explicit pyramid level.

    The level is an argument of :meth:`forward`; it is never inferred from call
    order. Subclasses decide what the level selects.

    Args:
        num_features (int): Number of channels.
        num_levels (int): Number of pyramid levels.
    """

    # mmcv names norm layers by this abbreviation, so a ConvModule's key stays ``bn``
    # whether it holds a BN or a level norm.
    _abbr_ = 'bn'

    def __init__(self, num_features: int, num_levels: int) -> None:
        super().__init__()
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f'{type(self).__name__}: num_levels must be a positive int, got '
                             f'{num_levels!r}')
        self.num_features = num_features
        self.num_levels = num_levels

    def check_level(self, level: int) -> None:
        """Refuse a level index outside ``[0, num_levels)``."""
        if isinstance(level, bool) or not isinstance(level, int) \
                or not 0 <= level < self.num_levels:
            raise IndexError(f'{type(self).__name__}: level {level!r} is out of range for '
                             f'num_levels={self.num_levels}')

    def extra_repr(self) -> str:
        return f'{self.num_features}, num_levels={self.num_levels}'


class MultiLevelBN(LevelNorm):
    """One private BatchNorm2d per feature-pyramid level (AQD's multi-level BN).

    AQD shares the tower convolutions of a detection head across pyramid levels but
    gives each level its own BN (own affine parameters and running statistics),
    because activation statistics differ strongly between levels.

    Args:
        num_features (int): Number of channels.
        num_levels (int): Number of pyramid levels.
        eps (float): BN epsilon. Defaults to 1e-5.
        momentum (float): BN momentum. Defaults to 0.1.
        affine (bool): Learn per-level scale and shift. Defaults to True.
        track_running_stats (bool): Keep running statistics. Defaults to True.
    """

    #: The BN class of each level (its arguments are those of BatchNorm2d).
    level_bn_class = QBN

    def __init__(self,
                 num_features: int,
                 num_levels: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 affine: bool = True,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, num_levels)
        self.bns = nn.ModuleList(
            self.level_bn_class(num_features, eps, momentum, affine, track_running_stats)
            for _ in range(num_levels))

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Normalise ``x`` with the BN of pyramid level ``level``.

        Args:
            x (Tensor): Features of shape (N, C, H, W) from one pyramid level.
            level (int): Index of that level, in ``[0, num_levels)``.

        Returns:
            Tensor: The normalised features.
        """
        self.check_level(level)
        return self.bns[level](x)
