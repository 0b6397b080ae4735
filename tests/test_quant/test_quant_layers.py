"""The quantized layers built from mmdet / mmcv configs (registration glue)."""
import pytest
import torch
from mmcv.cnn import ConvModule, build_conv_layer, build_norm_layer
from mmdet.models.backbones import ResNet
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

import mmaqd.models.layers  # noqa: F401  (registers the layers)
from mmaqd.quant import QBN, MultiLevelBN, QAdd, QConv, SharedLevelBN, SyncMultiLevelBN


@pytest.fixture(autouse=True, scope='module')
def mmdet_scope():
    register_all_modules()


def test_build_conv_layer():
    conv = build_conv_layer(dict(type='QConv', w_bits=4, a_bits=3, w_per_channel=True), 3, 8, 3,
                            padding=1)
    assert isinstance(conv, QConv)
    assert (conv.w_bits, conv.a_bits) == (4, 3)
    assert conv.weight_quantizer.step.shape == (8, )
    assert conv(torch.rand(1, 3, 6, 6)).shape == (1, 8, 6, 6)


def test_build_norm_layer_names_qbn_like_bn():
    name, norm = build_norm_layer(dict(type='QBN', simulate_bias_rounding=True), 8, postfix=1)
    assert name == 'bn1'
    assert isinstance(norm, QBN) and norm.simulate_bias_rounding
    _, frozen = build_norm_layer(dict(type='QBN', requires_grad=False), 8)
    assert not frozen.weight.requires_grad


def test_conv_module_with_quantized_conv_and_qbn():
    module = ConvModule(
        4, 8, 3, padding=1, conv_cfg=dict(type='QConv', w_bits=2, a_bits=2, quantizer='Clip'),
        norm_cfg=dict(type='QBN'))
    assert isinstance(module.conv, QConv) and module.conv.quantizer == 'Clip'
    assert isinstance(module.norm, QBN) and module.norm_name == 'bn'
    module.init_weights()
    x = torch.rand(2, 4, 5, 5, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None
    assert module.conv.weight_quantizer.clip_value.grad is not None


def test_quantized_resnet18_from_config():
    model = ResNet(depth=18, conv_cfg=dict(type='QConv', w_bits=4, a_bits=4),
                   norm_cfg=dict(type='QBN'))
    assert isinstance(model.conv1, QConv) and isinstance(model.bn1, QBN)
    assert isinstance(model.layer1[0].conv2, QConv)
    outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]
    assert model.layer4[1].conv2.input_quantizer.initialized


@pytest.mark.parametrize('cfg, cls', [
    (dict(type='QAdd', simulate_alignment=True), QAdd),
    (dict(type='MultiLevelBN', num_features=4, num_levels=3), MultiLevelBN),
    (dict(type='SharedLevelBN', num_features=4, num_levels=3), SharedLevelBN),
    (dict(type='SyncMultiLevelBN', num_features=4, num_levels=3), SyncMultiLevelBN),
])
def test_registry_builds(cfg, cls):
    assert type(MODELS.build(cfg)) is cls
