"""Agreement statistics between the integer engine and its references."""
from typing import Dict, Sequence

import torch

Outputs = Sequence[Sequence[torch.Tensor]]


def exact_agreement(outputs: Outputs, reference: Outputs) -> Dict[str, float]:
    """Element-wise agreement of two sets of integer outputs (engine vs simulation).

    Args:
        outputs (sequence[sequence[Tensor]]): Per kind, per level: integer tensors.
        reference (sequence[sequence[Tensor]]): The same structure.

    Returns:
        dict: ``equal_fraction`` (fraction of equal elements), ``max_abs_diff`` and
        ``num_elements``.
    """
    equal = total = 0
    max_diff = 0.0
    for kind, ref_kind in zip(outputs, reference, strict=True):
        for a, b in zip(kind, ref_kind, strict=True):
            a, b = a.double(), b.double()
            equal += int((a == b).sum())
            total += a.numel()
            if a.numel():
                max_diff = max(max_diff, float((a - b).abs().max()))
    return dict(equal_fraction=equal / max(total, 1), max_abs_diff=max_diff,
                num_elements=total)


def code_agreement(outputs: Outputs, real_reference: Outputs,
                   units: Sequence[Sequence[torch.Tensor]]) -> Dict[str, float]:
    """Agreement of integer outputs with real-valued ones, in output units (LSB).

    The reference is divided by the unit of each output channel; an element is
    equal if the rounded result is the engine's integer.

    Args:
        outputs (sequence[sequence[Tensor]]): Per kind, per level: integer tensors.
        real_reference (sequence[sequence[Tensor]]): Real outputs, same structure
            (e.g. the fake-quant model's head outputs).
        units (sequence[sequence[Tensor]]): Per kind, per level: ``(C,)`` units.

    Returns:
        dict: ``equal_fraction``, ``max_lsb`` (largest ``|reference / unit - integer|``),
        ``mean_lsb``, ``relative_error`` (``sum |diff|`` over the sum of the
        reference's absolute deviations from its per-channel mean, so that a constant
        bias such as a classifier's prior does not hide the differences) and
        ``num_elements``.
    """
    equal = total = 0
    max_lsb = sum_lsb = sum_ref = 0.0
    for kind, ref_kind, unit_kind in zip(outputs, real_reference, units, strict=True):
        for values, ref, unit in zip(kind, ref_kind, unit_kind, strict=True):
            code = ref.double() / unit.double().view(1, -1, 1, 1)
            diff = (code - values.double()).abs()
            equal += int((torch.round(code) == values.double()).sum())
            total += values.numel()
            if values.numel():
                max_lsb = max(max_lsb, float(diff.max()))
                sum_lsb += float(diff.sum())
                centred = code - code.mean(dim=(0, 2, 3), keepdim=True)
                sum_ref += float(centred.abs().sum())
    return dict(equal_fraction=equal / max(total, 1), max_lsb=max_lsb,
                mean_lsb=sum_lsb / max(total, 1), relative_error=sum_lsb / max(sum_ref, 1e-30),
                num_elements=total)
