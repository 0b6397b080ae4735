"""A ConvModule whose norm layer may depend on the pyramid level."""
from mmcv.cnn import ConvModule
from torch import Tensor, nn

from mmaqd.quant import LevelNorm, QConv


class LevelConvModule(ConvModule):
    """mmcv's conv -> norm -> activation block, with the pyramid level passed in.

    A :class:`~mmaqd.quant.LevelNorm` (multi-level BN and its flavours) and a
    :class:`~mmaqd.quant.QConv` (per-level input quantizers) receive the level
    explicitly; any other conv or norm (a plain BN, GN) is applied as it is. Only the
    default ``('conv', 'norm', 'act')`` order is supported.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if tuple(self.order) != ('conv', 'norm', 'act'):
            raise ValueError(f'LevelConvModule supports order (conv, norm, act), got '
                             f'{self.order}')

    def forward(self, x: Tensor, level: int) -> Tensor:  # type: ignore[override]
        """Run conv, the level's norm and the activation.

        Args:
            x (Tensor): Input features of one pyramid level.
            level (int): Index of the pyramid level.

        Returns:
            Tensor: Output features.
        """
        x = conv_at_level(self.conv, x, level)
        if self.with_norm:
            x = self.norm(x, level) if isinstance(self.norm, LevelNorm) else self.norm(x)
        if self.with_activation:
            x = self.activate(x)
        return x


def conv_at_level(conv: nn.Module, x: Tensor, level: int) -> Tensor:
    """Apply a conv to features of pyramid level ``level``.

    A :class:`~mmaqd.quant.QConv` gets the level (it selects the input quantizer);
    any other conv is called as it is.

    Args:
        conv (nn.Module): The conv.
        x (Tensor): Input features of one pyramid level.
        level (int): Index of the pyramid level.

    Returns:
        Tensor: The conv's output.
    """
    return conv(x, level=level) if isinstance(conv, QConv) else conv(x)
