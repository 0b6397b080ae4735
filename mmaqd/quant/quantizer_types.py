"""Look up a quantizer class by the type name used in configs."""
from types import MappingProxyType
from typing import Mapping, Type

from .clip_quantizer import ClipQuantizer
from .lsq_quantizer import LSQQuantizer
from .minmax_quantizer import MinMaxQuantizer
from .quantizer_base import Quantizer

#: Quantizer type names accepted by the quantized layers (read-only).
QUANTIZER_TYPES: Mapping[str, Type[Quantizer]] = MappingProxyType({
    'LSQ': LSQQuantizer,
    'Clip': ClipQuantizer,
    'MinMax': MinMaxQuantizer,
})


def get_quantizer_type(type_name: str, owner: str) -> Type[Quantizer]:
    """The quantizer class for ``type_name``.

    Args:
        type_name (str): One of ``'LSQ'`` (default AQD quantizer), ``'Clip'`` (the
            AQD reference code's variant) or ``'MinMax'`` (EMA min-max baseline).
        owner (str): Who asked, named in the error.

    Returns:
        type: A :class:`Quantizer` subclass.

    Raises:
        ValueError: If ``type_name`` is unknown; the message lists the valid names.
    """
    try:
        return QUANTIZER_TYPES[type_name]
    except (KeyError, TypeError):
        raise ValueError(f'{owner}: unknown quantizer type {type_name!r}; valid types: '
                         f'{", ".join(map(repr, QUANTIZER_TYPES))}') from None
