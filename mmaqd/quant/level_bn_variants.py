"""Ablation and DDP flavours of :class:`MultiLevelBN` with the same ``forward(x, level)``."""
from typing import Optional

import torch

from .multi_level_bn import LevelNorm, MultiLevelBN
from .qbn import QBN
from .sync_bn import SyncQBN


class SyncMultiLevelBN(MultiLevelBN):
    """:class:`MultiLevelBN` whose per-level BNs use the global batch under DDP.

    Each level's statistics are all-reduced across processes separately (one
    :class:`~mmaqd.quant.sync_bn.SyncQBN` per level), on CPU (gloo) as on GPU.
    Without an initialised process group, and in eval mode, it is exactly
    :class:`MultiLevelBN`; the state dicts of the two are interchangeable.

    Args:
        num_features (int): Number of channels.
        num_levels (int): Number of pyramid levels.
        eps (float): BN epsilon. Defaults to 1e-5.
        momentum (float): BN momentum. Defaults to 0.1.
        affine (bool): Learn per-level scale and shift. Defaults to True.
        track_running_stats (bool): Keep running statistics. Defaults to True.
    """

    level_bn_class = SyncQBN


class SharedLevelBN(LevelNorm):
    """One BatchNorm2d shared by all pyramid levels (the ablation baseline).

    Same interface as :class:`MultiLevelBN` so a head can switch by config; the
    level is checked but does not select anything.

    Args:
        num_features (int): Number of channels.
        num_levels (int): Number of pyramid levels.
        eps (float): BN epsilon. Defaults to 1e-5.
        momentum (float): BN momentum. Defaults to 0.1.
        affine (bool): Learn scale and shift. Defaults to True.
        track_running_stats (bool): Keep running statistics. Defaults to True.
    """

    def __init__(self,
                 num_features: int,
                 num_levels: int,
                 eps: float = 1e-5,
                 momentum: Optional[float] = 0.1,
                 affine: bool = True,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, num_levels)
        self.bn = QBN(num_features, eps, momentum, affine, track_running_stats)

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Normalise ``x`` with the shared BN.

        Args:
            x (Tensor): Features of shape (N, C, H, W) from one pyramid level.
            level (int): Index of that level, in ``[0, num_levels)``.

        Returns:
            Tensor: The normalised features.
        """
        self.check_level(level)
        return self.bn(x)
