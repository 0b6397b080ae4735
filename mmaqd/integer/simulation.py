"""Give the fake-quant layers the integer engine's units (integer-aware QAT).

:func:`~mmaqd.quant.integer_aware.set_integer_aware` switches the layers to the
engine's arithmetic; :func:`sync_engine_units` converts the model (without
changing it) and hands each layer what that arithmetic needs: the accumulator
unit of every folded BN, the operand units of every add and every input
quantizer's requantization. The units follow the learned scales and BN
statistics, so a training run calls it again as they change
(:class:`~mmaqd.engine.hooks.IntegerAwareQATHook` does, every iteration).
"""
from typing import Dict, List, Optional

import torch
from torch import nn

from mmaqd.quant import QBN, EngineRequant, Quantizer

from .convert import EngineLinks
from .detector import convert_detector


def uninitialised_quantizers(model: nn.Module) -> List[str]:
    """Names of the enabled quantizers without a scale yet (LSQ before its first batch)."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, Quantizer) and module.enabled:
            initialized = getattr(module, 'initialized', None)
            if initialized is not None and not bool(initialized):
                names.append(name)
    return names


def engine_links(model: nn.Module) -> EngineLinks:
    """The engine's units of ``model``, from a conversion with the running BN statistics.

    The model is put in eval mode for the conversion and back in its mode after.

    Args:
        model (nn.Module): An AQD detector (not wrapped).

    Returns:
        EngineLinks: What each fake-quant layer needs.
    """
    links = EngineLinks()
    training = model.training
    model.eval()
    try:
        convert_detector(model, links)
    finally:
        model.train(training)
    return links


def _same_bias(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    """Whether two conv biases (None: no bias) are the same numbers."""
    if a is None or b is None:
        return a is None and b is None
    return torch.equal(a.detach(), b.detach())


def apply_engine_links(links: EngineLinks) -> Dict[str, int]:
    """Set the units and requantizations of :func:`engine_links` on the fake-quant layers.

    A BN that the engine folds with different units or conv biases on different
    levels (one BN shared by the levels of a head) keeps its float bias; an input
    quantizer read on levels whose producers have different units (one quantizer
    shared by the levels) keeps plain fake quantization.

    Args:
        links (EngineLinks): From :func:`engine_links`.

    Returns:
        dict: How many BNs, adds and quantizers were given units, and how many BNs
        were left float (``'bn_shared'``) and quantizers plain (``'requant_shared'``).
    """
    by_bn: Dict[int, tuple] = {}
    for bn, _, unit, conv_bias in links.bn_units:
        bn_units = by_bn.setdefault(id(bn), (bn, []))[1]
        bn_units.append((unit.reshape(-1), conv_bias))
    counts = {'bn': 0, 'bn_shared': 0, 'add': 0, 'requant': 0, 'requant_shared': 0}
    for bn, units in by_bn.values():
        if not isinstance(bn, QBN):
            continue
        if all(torch.equal(u, units[0][0]) and _same_bias(b, units[0][1])
               for u, b in units[1:]):
            bn.set_input_unit(*units[0])
            counts['bn'] += 1
        else:
            bn.set_input_unit(None)
            counts['bn_shared'] += 1
    for qadd, unit_x, unit_y in links.add_units:
        qadd.set_units(unit_x, unit_y)
        counts['add'] += 1
    by_quantizer: Dict[int, tuple] = {}
    for quantizer, unit, m0, shift in links.requants:
        by_quantizer.setdefault(id(quantizer), (quantizer, []))[1].append((unit, m0, shift))
    for quantizer, entries in by_quantizer.values():
        first = entries[0]
        if all(all(torch.equal(a, b) for a, b in zip(first, other)) for other in entries[1:]):
            quantizer.engine_requant = EngineRequant(*first)
            counts['requant'] += 1
        else:  # one quantizer read on levels with different producer units
            quantizer.engine_requant = None
            counts['requant_shared'] += 1
    return counts


def sync_engine_units(model: nn.Module) -> Optional[Dict[str, int]]:
    """:func:`engine_links` then :func:`apply_engine_links`, once every quantizer has a scale.

    Args:
        model (nn.Module): An AQD detector (not wrapped).

    Returns:
        dict | None: The counts of :func:`apply_engine_links`, or None while some
        quantizer is uninitialised (nothing is set then).
    """
    if uninitialised_quantizers(model):
        return None
    return apply_engine_links(engine_links(model))


__all__ = ['engine_links', 'apply_engine_links', 'sync_engine_units', 'uninitialised_quantizers']
