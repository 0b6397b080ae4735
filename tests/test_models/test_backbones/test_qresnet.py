"""QResNet: exact FP equivalence at 32 bits, quantized skips, integer stem input."""
import pytest
import torch
from mmdet.models.backbones import ResNet

import mmaqd  # noqa: F401
from mmdet.utils import register_all_modules
from mmaqd.quant import QAdd, QConv
from mmaqd.models import QResNet
from mmaqd.models.detectors.quant_detector_mixin import is_quantizer_key

register_all_modules()


def randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5


@pytest.mark.parametrize('depth', [18, 50])
def test_32_bit_qresnet_equals_resnet_with_the_same_weights(depth):
    torch.manual_seed(0)
    fp = ResNet(depth=depth)
    randomize_bn(fp)
    q = QResNet(depth=depth)
    result = q.load_state_dict(fp.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(is_quantizer_key(k) for k in result.missing_keys)
    x = torch.randn(2, 3, 64, 64) * 50
    for mode in ('eval', 'train'):
        getattr(fp, mode)()
        getattr(q, mode)()
        for a, b in zip(fp(x), q(x)):
            assert torch.equal(a, b), mode


def test_every_conv_is_quantized_and_every_block_adds_through_qadd():
    q = QResNet(depth=18)
    convs = [m for m in q.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, QConv) for m in convs)
    assert sum(isinstance(m, QAdd) for m in q.modules()) == 8
    assert q.conv1.input_quantizer is None
    assert type(q.bn1).__name__ == 'QBN'
    assert q.layer1[0].conv1.input_quantizer is not None


def test_qadd_is_what_adds_the_shortcut():
    q = QResNet(depth=18)
    q.eval()
    calls = []
    q.layer2[0].add.register_forward_hook(lambda m, inp, out: calls.append(
        (inp[0].shape, inp[1].shape)))
    q(torch.randn(1, 3, 64, 64))
    assert calls == [(torch.Size([1, 128, 8, 8]), torch.Size([1, 128, 8, 8]))]


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match='deep_stem is not supported'):
        QResNet(depth=18, deep_stem=True)
    with pytest.raises(ValueError, match='dcn is not supported'):
        QResNet(depth=50, dcn=dict(type='DCNv2', deform_groups=1),
                stage_with_dcn=(False, True, True, True))
