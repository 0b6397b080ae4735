"""QFPN: exact FP equivalence at 32 bits, quantized top-down adds."""
import pytest
import torch
from mmdet.models.necks import FPN

import mmaqd  # noqa: F401
from mmdet.utils import register_all_modules
from mmaqd.models import QFPN
from mmaqd.quant import QAdd
from mmaqd.models.detectors.quant_detector_mixin import is_quantizer_key

IN_CHANNELS = [8, 16, 32, 64]

register_all_modules()


def inputs():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(2, c, 32 // 2**i, 32 // 2**i, generator=g)
            for i, c in enumerate(IN_CHANNELS)]


@pytest.mark.parametrize('extra', ['on_input', 'on_output'])
def test_32_bit_qfpn_equals_fpn_with_bn_relu(extra):
    torch.manual_seed(0)
    kwargs = dict(in_channels=IN_CHANNELS, out_channels=8, start_level=1, num_outs=5,
                  add_extra_convs=extra, relu_before_extra_convs=extra == 'on_output')
    fp = FPN(norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'), **kwargs)
    q = QFPN(**kwargs)
    result = q.load_state_dict(fp.state_dict(), strict=False)
    assert not result.unexpected_keys and all(is_quantizer_key(k) for k in result.missing_keys)
    for mode in ('train', 'eval'):
        getattr(fp, mode)()
        getattr(q, mode)()
        outs_fp, outs_q = fp(inputs()), q(inputs())
        assert len(outs_q) == 5
        for a, b in zip(outs_fp, outs_q):
            assert torch.equal(a, b)


def test_top_down_adds_are_qadds_and_see_lateral_plus_upsampled():
    q = QFPN(in_channels=IN_CHANNELS, out_channels=8, start_level=1, num_outs=5,
             add_extra_convs='on_input')
    assert len(q.top_down_adds) == 2 and all(isinstance(m, QAdd) for m in q.top_down_adds)
    seen = []
    q.top_down_adds[0].register_forward_hook(
        lambda m, inp, out: seen.append((inp[0].shape, inp[1].shape)))
    q(inputs())
    assert seen == [(torch.Size([2, 8, 16, 16]), torch.Size([2, 8, 16, 16]))]


def test_non_nearest_upsampling_is_refused():
    with pytest.raises(ValueError, match='bilinear'):
        QFPN(in_channels=IN_CHANNELS, out_channels=8, num_outs=4,
             upsample_cfg=dict(mode='bilinear'))
