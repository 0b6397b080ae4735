"""Conversion of fake-quant layers to integer layers, checked against the fake-quant model."""
import copy
import re
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmaqd.integer import ConversionError, IntAdd, IntConv, convert_add, convert_conv, fold_bn
from mmaqd.quant import QAdd, QConv

# Input units over the input step 0.75 are 1/3, 2/3 and 5/3: odd denominators, so
# v * u / s_x is never a tie and round-half-up (engine) agrees with half-to-even (torch).
IN_UNIT = torch.tensor([0.25, 0.5, 1.25])
IN_STEP = 0.75
W_STEP = 0.1


def set_step(quantizer, step):
    with torch.no_grad():
        quantizer.step.copy_(torch.as_tensor(step, dtype=torch.float32))
    quantizer.initialized.fill_(True)


def make_bn(gamma, beta, mean, var, eps=1e-3):
    bn = nn.BatchNorm2d(len(gamma), eps=eps)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
    return bn.eval()


def make_qconv(in_channels=3, out_channels=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = dict(dict(padding=1, w_bits=4, a_bits=4), **kwargs)
    conv = QConv(in_channels, out_channels, 3, **kwargs)
    with torch.no_grad():
        conv.weight.normal_(0, 0.3)
        if conv.bias is not None:
            conv.bias.copy_(torch.linspace(-0.2, 0.3, out_channels))
    set_step(conv.weight_quantizer, W_STEP)
    for quantizer in conv.input_quantizers:
        set_step(quantizer, IN_STEP)
    return conv.eval()


def int_input(seed, channels=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 31, (2, channels, 6, 7), generator=gen)


def bn_multiplier(bn):
    return bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)


def check_against_fake_quant(int_conv, conv, bn, v, unit, level=0):
    """The engine's integers equal the exact integer reference; in real units they
    are within the BN-bias rounding, ``|g'| * S / 2``, of the fake-quant output."""
    out = int_conv(v, level, 'int')
    out_float = int_conv(v.double(), level, 'float')
    assert out.dtype == torch.int64 and out_float.dtype == torch.float64
    assert torch.equal(out.double(), out_float)

    conv64, bn64 = copy.deepcopy(conv).double(), copy.deepcopy(bn).double()
    x = v.double() * unit.double().view(1, -1, 1, 1)
    q_level = level if conv.num_levels > 1 else 0
    quantizer = conv64.input_quantizers[q_level]
    s_x = quantizer.get_scale()
    s_w = conv64.weight_quantizer.get_scale()
    acc_unit = s_x * s_w
    g = bn_multiplier(bn64)
    codes_x = quantizer.integer_codes(x).double()
    codes_w = conv64.weight_quantizer.integer_codes(conv64.weight).double()
    acc = F.conv2d(codes_x, codes_w, None, conv.stride, conv.padding)
    bias = torch.round((bn64.bias / g - bn64.running_mean + conv64.bias) / acc_unit)
    expected = F.relu(torch.sign(g).view(1, -1, 1, 1) * (acc + bias.view(1, -1, 1, 1)))
    assert torch.equal(out.double(), expected)

    assert torch.allclose(int_conv.out_unit[level], g.abs() * acc_unit, rtol=1e-15, atol=0)
    with torch.no_grad():
        fake_quant = F.relu(bn64(conv64(x, q_level)))
    real = out.double() * int_conv.out_unit[level].view(1, -1, 1, 1)
    bound = (g.abs() * acc_unit / 2).view(1, -1, 1, 1)
    assert ((real - fake_quant).abs() <= bound + 1e-12).all()
    # Not vacuous: some outputs are clipped by the ReLU, many are positive.
    assert (out == 0).any() and (out > 0).sum() > out.numel() // 4
    return out


def test_fold_bn_hand_values():
    # var + eps = 4, 1, 16: g' = 3 / 2, -1 / 1, 0.5 / 4 (exact in binary).
    bn = make_bn(gamma=[3.0, -1.0, 0.5], beta=[0.75, 0.3, -1.0], mean=[0.5, -0.2, 0.26],
                 var=[3.75, 0.75, 15.75], eps=0.25)
    conv_bias = torch.tensor([0.1, -0.05, 0.0])
    acc_unit = torch.tensor([0.0625, 0.125, 0.25])
    bias, sign, unit, constant = fold_bn(bn, acc_unit, conv_bias)
    assert not constant.any()
    # (beta / g' - mu + c) / S: 0.1 / 0.0625 = 1.6, -0.15 / 0.125 = -1.2, -8.26 / 0.25 = -33.04.
    assert bias.dtype == sign.dtype == torch.int64 and unit.dtype == torch.float64
    assert bias.tolist() == [2, -1, -33]
    assert sign.tolist() == [1, -1, 1]
    assert unit.tolist() == [1.5 * 0.0625, 1.0 * 0.125, 0.125 * 0.25]

    # One unit for all channels, no conv bias: 0, -0.1 and -8.26 over 0.0625.
    bias, sign, unit, _ = fold_bn(bn, torch.tensor([0.0625]), None)
    assert bias.tolist() == [0, -2, -132]
    assert unit.tolist() == [1.5 * 0.0625, 0.0625, 0.125 * 0.0625]

    gen = torch.Generator().manual_seed(0)
    acc = torch.randint(-3000, 3000, (2, 3, 5, 5), generator=gen).double()
    bias, sign, unit, _ = fold_bn(bn, acc_unit, conv_bias)
    folded = (sign.view(1, -1, 1, 1) * (acc + bias.view(1, -1, 1, 1))) * unit.view(1, -1, 1, 1)
    reference = copy.deepcopy(bn).double()(acc * acc_unit.double().view(1, -1, 1, 1) +
                                           conv_bias.double().view(1, -1, 1, 1))
    g = torch.tensor([1.5, -1.0, 0.125], dtype=torch.float64)
    error = (folded - reference).abs()
    bound = (g.abs() * acc_unit.double() / 2).view(1, -1, 1, 1)
    assert (error <= bound + 1e-12).all()
    # The bound is attained up to the residual of the bias rounding: 0.4, 0.2 and 0.04 units.
    residual = torch.tensor([0.4, 0.2, 0.04], dtype=torch.float64)
    assert torch.allclose(error.amax((0, 2, 3)), residual * g.abs() * acc_unit.double(),
                          rtol=1e-5)


def test_fold_bn_without_affine_and_zero_gamma():
    bn = nn.BatchNorm2d(2, affine=False, eps=0.0).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    bias, sign, unit, _ = fold_bn(bn, torch.tensor([0.5]), None)
    assert bias.tolist() == [-2, 4] and sign.tolist() == [1, 1]
    assert unit.tolist() == [0.25, 1.0]



def test_fold_bn_zero_gamma_is_the_constant_beta():
    # var + eps = 1: g' = gamma. Channel 1 outputs beta = 0.3 whatever its input.
    bn = make_bn(gamma=[1.0, 0.0, 2.0], beta=[0.0, 0.3, 0.0], mean=[0.0] * 3, var=[1.0] * 3,
                 eps=0.0)
    bias, sign, unit, constant = fold_bn(bn, torch.tensor([0.125]), None)
    assert constant.tolist() == [False, True, False]
    # round(0.3 / 0.125) = 2 accumulator units; sign +1; unit S itself
    assert bias[1] == 2 and sign[1] == 1 and unit[1] == 0.125
    assert sign.tolist() == [1, 1, 1] and unit[2] == 0.25


def test_convert_conv_zero_gamma_channel_outputs_beta():
    conv = make_qconv()
    bn = make_bn(gamma=[1.5, 0.0, 0.6, 0.0], beta=[0.3, 0.7, 0.5, -0.4],
                 mean=[0.1, -0.3, 0.2, 0.4], var=[0.5, 2.0, 1.3, 0.7])
    int_conv = convert_conv('backbone.layer1.0.conv2', conv, [IN_UNIT], [bn], relu=False)
    assert int_conv.weight[[1, 3]].abs().sum() == 0 and int_conv.weight[0].abs().sum() > 0
    unit = int_conv.out_unit[0]
    # the accumulator unit S = s_x * s_w (float32 steps) for the constant channels
    assert unit[1] == unit[3] and abs(float(unit[1]) - IN_STEP * W_STEP) < 1e-8
    for seed in range(2):
        out = int_conv(int_input(seed), 0, 'int')
        # round(beta / S): beta on the accumulator grid, whatever the input
        assert torch.all(out[:, 1] == round(0.7 / float(unit[1])))
        assert torch.all(out[:, 3] == round(-0.4 / float(unit[3])))
        assert out[:, 0].double().std() > 0


def test_convert_conv_zero_gamma_at_one_level_only_names_the_layer():
    conv = make_qconv(num_levels=2)
    bns = [make_bn(gamma=[1.0, 0.0, 1.0, 1.0], beta=[0.1] * 4, mean=[0.0] * 4, var=[1.0] * 4),
           make_bn(gamma=[1.0] * 4, beta=[0.1] * 4, mean=[0.0] * 4, var=[1.0] * 4)]
    with pytest.raises(ConversionError, match=re.escape(
            'bbox_head.cls_convs.0: BN channel(s) [1] have gamma = 0 at level 0 but not at '
            'every level')):
        convert_conv('bbox_head.cls_convs.0', conv, [IN_UNIT] * 2, bns, relu=True)


@pytest.mark.parametrize('w_per_channel', [False, True])
def test_convert_conv_bn_relu_equals_fake_quant(w_per_channel):
    conv = make_qconv(w_per_channel=w_per_channel)
    if w_per_channel:
        set_step(conv.weight_quantizer, torch.tensor([0.1, 0.05, 0.2, 0.125]))
    bn = make_bn(gamma=[1.5, -0.8, 0.6, 2.0], beta=[0.3, -0.2, 0.5, -1.0],
                 mean=[0.1, -0.3, 0.2, 0.4], var=[0.5, 2.0, 1.3, 0.7])
    int_conv = convert_conv('backbone.conv1', conv, [IN_UNIT], [bn], relu=True)
    assert isinstance(int_conv, IntConv)
    assert int_conv.num_levels == 1 and int_conv.relu and int_conv.w_bits == 4
    assert int_conv.in_range == (0, 15)
    assert int_conv.weight.dtype == torch.int64
    assert int_conv.weight.min() >= -8 and int_conv.weight.max() <= 7
    assert int_conv.sign[0].tolist() == [1, -1, 1, 1]
    for seed in range(3):
        v = int_input(seed)
        codes = (v.double() * IN_UNIT.double().view(1, -1, 1, 1) / IN_STEP).round()
        assert (codes < 0).any() and (codes > 15).any()  # the input clamp is exercised
        check_against_fake_quant(int_conv, conv, bn, v, IN_UNIT)


def test_convert_conv_per_level_constants():
    conv = make_qconv(num_levels=2)
    set_step(conv.input_quantizers[1], 1.25)
    # Level 1: units 0.5, 0.25, 1.25 over 1.25 give 2/5, 1/5, 1: no ties either.
    units = [IN_UNIT, torch.tensor([0.5, 0.25, 1.25])]
    bns = [make_bn(gamma=[1.5, -0.8, 0.6, 2.0], beta=[0.3, -0.2, 0.5, -1.0],
                   mean=[0.1, -0.3, 0.2, 0.4], var=[0.5, 2.0, 1.3, 0.7]),
           make_bn(gamma=[-1.0, 0.7, 1.2, 0.9], beta=[0.4, 0.6, -0.3, 0.2],
                   mean=[-0.1, 0.5, 0.0, 0.3], var=[1.1, 0.4, 0.9, 2.5])]
    int_conv = convert_conv('bbox_head.cls_convs.0', conv, units, bns, relu=True)
    assert int_conv.num_levels == 2
    assert int_conv.in_m0.shape == int_conv.in_shift.shape == (2, 3)
    assert int_conv.bias.shape == int_conv.sign.shape == int_conv.out_unit.shape == (2, 4)
    assert int_conv.sign.tolist() == [[1, -1, 1, 1], [-1, 1, 1, 1]]
    assert not torch.equal(int_conv.bias[0], int_conv.bias[1])
    v = int_input(3)
    outs = [check_against_fake_quant(int_conv, conv, bns[level], v, units[level], level)
            for level in range(2)]
    assert not torch.equal(outs[0], outs[1])
    with pytest.raises(IndexError, match='level 2 is out of range for 2 levels'):
        int_conv(v, 2)


def test_convert_conv_shared_quantizer_for_all_levels():
    conv = make_qconv()
    bn = make_bn(gamma=[1.0] * 4, beta=[0.1, 0.2, 0.3, 0.4], mean=[0.0] * 4, var=[1.0] * 4)
    units = [IN_UNIT, 2 * IN_UNIT]
    int_conv = convert_conv('neck.fpn', conv, units, [bn, bn], relu=True)
    # 2 * u / s_x is 2/3, 4/3, 10/3; the requantization multipliers double.
    assert torch.equal(int_conv.in_m0[0], int_conv.in_m0[1])
    assert torch.equal(int_conv.in_shift[0] - 1, int_conv.in_shift[1])
    v = int_input(4)
    check_against_fake_quant(int_conv, conv, bn, v, units[1], level=1)
    with pytest.raises(ConversionError, match=re.escape(
            'neck.fpn: conv has 2 input quantizers for 3 levels')):
        convert_conv('neck.fpn', make_qconv(num_levels=2), [IN_UNIT] * 3, [bn] * 3)


def test_convert_conv_without_bn_and_with_out_scale():
    conv = make_qconv(stride=2)
    int_conv = convert_conv('bbox_head.retina_reg', conv, [IN_UNIT], None, relu=False,
                            out_scale=[2.0])
    s = IN_STEP * float(torch.tensor(W_STEP, dtype=torch.float32))
    assert int_conv.sign is None and not int_conv.relu
    # Conv bias -0.2, -1/30, 2/15, 0.3 over S = 0.075: -2.67, -0.44, 1.78, 4.
    assert int_conv.bias.tolist() == [[-3, 0, 2, 4]]
    assert torch.equal(int_conv.out_unit, torch.full((1, 4), 2 * s, dtype=torch.float64))
    v = int_input(5)
    out = int_conv(v)
    assert torch.equal(out.double(), int_conv(v.double(), 0, 'float'))
    with torch.no_grad():
        fake_quant = 2 * conv.double()(v.double() * IN_UNIT.double().view(1, -1, 1, 1))
    error = (out * int_conv.out_unit.view(1, -1, 1, 1) - fake_quant).abs()
    assert (error <= s + 1e-12).all()  # half a unit S, times the out scale 2
    assert (out < 0).any() and (out > 0).any()


def test_convert_conv_reading_the_image():
    conv = make_qconv(in_channels=3, input_quant=None, a_bits=32, bias=False)
    bn = make_bn(gamma=[0.5, -2.0, 1.0, 1.0], beta=[0.1, 0.0, -0.4, 0.2],
                 mean=[0.3, 0.0, 0.1, -0.2], var=[1.0, 1.0, 4.0, 0.25])
    int_conv = convert_conv('backbone.conv1', conv, None, [bn], relu=False)
    assert int_conv.in_m0 is None and int_conv.in_range == (0, 0)
    gen = torch.Generator().manual_seed(6)
    image = torch.randint(-124, 152, (1, 3, 5, 5), generator=gen)
    out = int_conv(image)
    assert torch.equal(out.double(), int_conv(image.double(), 0, 'float'))
    g = bn_multiplier(bn)
    s_w = torch.tensor(W_STEP, dtype=torch.float32).double()
    codes_w = conv.weight_quantizer.integer_codes(conv.weight).double()
    acc = F.conv2d(image.double(), codes_w, None, 1, 1)
    bias = torch.round((bn.bias.double() / g - bn.running_mean.double()) / s_w)
    expected = torch.sign(g).view(1, -1, 1, 1) * (acc + bias.view(1, -1, 1, 1))
    assert torch.equal(out.double(), expected)
    assert torch.allclose(int_conv.out_unit[0], g.abs() * s_w, rtol=1e-15, atol=0)


@pytest.mark.parametrize('kwargs, message', [
    (dict(w_bits=32), 'layer.conv: QConv weight quantizer is at 32 bits; integer conversion '
                      'needs every conv quantized'),
    (dict(a_bits=32), 'layer.conv: QConv input quantizer is at 32 bits'),
    (dict(quantizer='MinMax'), 'layer.conv: QConv weight quantizer is a min-max quantizer '
                               'with a zero point'),
])
def test_convert_conv_rejects_unsupported_quantizers(kwargs, message):
    conv = QConv(3, 4, 3, **dict(dict(w_bits=4, a_bits=4), **kwargs))
    for quantizer in [conv.weight_quantizer, *conv.input_quantizers]:
        if hasattr(quantizer, 'initialized') and quantizer.enabled:
            set_step(quantizer, 0.5)
    with pytest.raises(ConversionError, match=re.escape(message)):
        convert_conv('layer.conv', conv, [torch.tensor([0.1])])


def test_convert_conv_rejects_uninitialised_quantizer():
    conv = QConv(3, 4, 3, w_bits=4, a_bits=4)
    set_step(conv.weight_quantizer, 0.1)
    with pytest.raises(ConversionError, match=re.escape(
            'layer.conv: QConv input quantizer was never initialised (no scale yet)')):
        convert_conv('layer.conv', conv, [torch.tensor([0.1])])


def test_convert_conv_rejects_wrong_input_kind():
    with pytest.raises(ConversionError, match=re.escape(
            'stem: the conv has an input quantizer but its input is the integer image')):
        convert_conv('stem', make_qconv(), None)
    image_conv = make_qconv(input_quant=None)
    with pytest.raises(ConversionError, match=re.escape(
            'stem: the conv has no input quantizer but its input is not the integer image')):
        convert_conv('stem', image_conv, [IN_UNIT])
    with pytest.raises(ConversionError, match=re.escape(
            'stem: Conv2d is not a QConv; every conv must be quantized')):
        convert_conv('stem', nn.Conv2d(3, 4, 3), [IN_UNIT])


def test_convert_conv_rejects_accumulator_overflow():
    # 8-bit unsigned inputs and 8-bit weights: 255 * 128 * (8192 * 9) > 2^31 - 1.
    conv = make_qconv(8192, 1, bias=False, w_bits=8, a_bits=8)
    with pytest.raises(ConversionError, match=re.escape(
            'bbox_head.big: accumulator bound 2406481920 exceeds the limit 2147483647')):
        convert_conv('bbox_head.big', conv, [torch.tensor([0.75])])
    convert_conv('bbox_head.half', make_qconv(4096, 1, bias=False, w_bits=8, a_bits=8),
                 [torch.tensor([0.75])])


def test_convert_conv_overflow_counts_the_bias():
    # 255 * 128 * 65793 = 2^31 - 1 - 127 leaves room for |B| <= 127 exactly.
    conv = QConv(21931, 1, (1, 3), w_bits=8, a_bits=8)
    set_step(conv.weight_quantizer, 0.25)
    set_step(conv.input_quantizer, 0.5)
    unit = [torch.tensor([0.5])]
    with torch.no_grad():
        conv.bias.fill_(127 * 0.125)
    assert convert_conv('head', conv, unit).bias.tolist() == [[127]]
    with torch.no_grad():
        conv.bias.fill_(128 * 0.125)
    with pytest.raises(ConversionError, match=re.escape(
            'head: accumulator bound 2147483648 exceeds the limit 2147483647')):
        convert_conv('head', conv, unit)


def test_convert_conv_overflow_names_the_bn_channel_with_a_gamma_near_zero():
    # Channel 2's gamma has barely left 0: its folded bias is beta / g' / S, about
    # 0.5 / 1e-9 / 0.075 = 6.7e9 accumulator units, more than int32 holds.
    conv = make_qconv(bias=False)
    bn = make_bn([1.0, 0.5, 1e-9, -2.0], [0.1, 0.2, 0.5, 0.0], [0.0] * 4, [1.0] * 4, eps=0.0)
    with pytest.raises(ConversionError, match=re.escape(
            'backbone.layer1.0.conv2: accumulator bound 66666')) as err:
        convert_conv('backbone.layer1.0.conv2', conv, [IN_UNIT], [bn])
    assert ('the largest |bias| comes from channel 2 of the BN at level 0 (gamma 1e-09, '
            'beta 0.5)') in str(err.value)
    with torch.no_grad():
        bn.weight[2] = 1e-6  # 6.7e6 units: fits
    assert int(convert_conv('x', conv, [IN_UNIT], [bn]).bias[0][2]) == 6666667
    with torch.no_grad():
        bn.weight[2] = 1e-30  # 6.7e30 units would wrap int64 silently
    with pytest.raises(ConversionError, match=re.escape(
            'backbone.x (level 0): BatchNorm2d channel 2: folded bias 6.667e+30 accumulator '
            'units does not fit int64 (gamma 1e-30, beta 0.5')):
        convert_conv('backbone.x', conv, [IN_UNIT], [bn])


def test_an_overflow_from_the_products_gives_no_bn_hint():
    # 8-bit inputs and weights over 8192 * 9 products overflow with a small bias.
    conv = make_qconv(8192, 1, bias=False, w_bits=8, a_bits=8)
    bn = make_bn([1e-3], [0.5], [0.0], [1.0], eps=0.0)  # folded bias 0.5 / 1e-3 / 0.075
    with pytest.raises(ConversionError) as err:
        convert_conv('neck.big', conv, [torch.tensor([0.75])], [bn])
    assert 'accumulator bound 2406488587 exceeds' in str(err.value)
    assert 'largest |bias|' not in str(err.value)


@pytest.mark.parametrize('relu', [False, True])
def test_convert_add_per_channel(relu):
    qadd = QAdd(simulate_alignment=True)
    unit_x, unit_y = torch.tensor([0.5, 0.25]), torch.tensor([0.25, 1.0])
    int_add = convert_add('backbone.layer1.0.add', qadd, unit_x, unit_y, relu)
    assert isinstance(int_add, IntAdd) and int_add.relu == relu
    assert int_add.out_unit.dtype == torch.float64 and int_add.out_unit.tolist() == [0.25, 0.25]
    # Ratios to the output unit: x by 2 and 1, y by 1 and 4, with 15 fraction bits.
    assert int_add.frac_bits == 15
    assert int_add.mantissa_x.tolist() == [2 * 2**15, 2**15]
    assert int_add.mantissa_y.tolist() == [2**15, 4 * 2**15]
    x = torch.tensor([[[3, -2], [0, 5]], [[1, -4], [2, 0]]]).unsqueeze(0)
    y = torch.tensor([[[-1, 1], [-7, 2]], [[0, 1], [-1, -3]]]).unsqueeze(0)
    expected = [[[5, -3], [-7, 12]], [[1, 0], [-2, -12]]]
    if relu:
        expected = [[[5, 0], [0, 12]], [[1, 0], [0, 0]]]
    out = int_add(x, y)
    assert out.dtype == torch.int64 and out[0].tolist() == expected
    out_float = int_add(x.double(), y.double(), 'float')
    assert out_float.dtype == torch.float64 and torch.equal(out.double(), out_float)
    # The QAdd got the units and simulates exactly this.
    view = (1, -1, 1, 1)
    simulated = qadd(x * unit_x.view(view), y * unit_y.view(view))
    simulated = F.relu(simulated) if relu else simulated
    assert torch.equal(simulated, out.float() * 0.25)


def test_convert_add_rounds_half_up():
    qadd = QAdd()
    int_add = convert_add('neck.add', qadd, torch.tensor([0.75]), torch.tensor([0.5]), False)
    assert int_add.out_unit.tolist() == [0.5]
    assert int_add.mantissa_x.tolist() == [3 * 2**14] and int_add.mantissa_y.tolist() == [2**15]
    # x * 1.5: -4.5 -> -4, -1.5 -> -1, 1.5 -> 2, 4.5 -> 5, 3; plus y.
    x = torch.tensor([-3, -1, 1, 3, 2]).view(1, 1, 1, 5)
    y = torch.tensor([0, 0, 0, 0, 1]).view(1, 1, 1, 5)
    out = int_add(x, y)
    assert out.flatten().tolist() == [-4, -1, 2, 5, 4]
    assert torch.equal(out.double(), int_add(x.double(), y.double(), 'float'))
    with pytest.raises(ConversionError, match=re.escape('neck.add: Identity is not a QAdd')):
        convert_add('neck.add', nn.Identity(), torch.tensor([0.75]), torch.tensor([0.5]), False)


def test_convert_conv_rejects_an_input_unit_of_the_wrong_size():
    conv = make_qconv(w_bits=4, a_bits=4)
    with pytest.raises(ConversionError, match='level 0 has 2 channels, the conv takes 3'):
        convert_conv('neck.x', conv, [torch.tensor([0.5, 0.25])])


def test_convert_conv_refuses_a_requantization_multiplier_beyond_the_engine():
    conv = make_qconv(w_bits=4, a_bits=4)
    step = float(conv.input_quantizer.get_scale())
    with pytest.raises(ConversionError, match=r'neck\.x: requantization multiplier .* too large'):
        convert_conv('neck.x', conv, [torch.tensor([step * 2**16])])


def test_convert_add_mantissas_are_the_exact_ratios_of_float64_units():
    """The mantissas equal round(u / min(u_x, u_y) * 2^15) computed exactly in rationals.

    Units such as ``|g'| * s_x * s_w`` are float64 numbers; rounded to float32 first,
    about one mantissa in ten moved by 1 or 2 on these units.
    """
    gen = torch.Generator().manual_seed(0)
    unit_x = torch.rand(2048, generator=gen, dtype=torch.float64) * 1e-3 + 1e-5
    unit_y = torch.rand(2048, generator=gen, dtype=torch.float64) * 3e-2 + 1e-5
    int_add = convert_add('neck.top_down_adds.0', QAdd(simulate_alignment=True), unit_x,
                          unit_y, False)

    def exact(units, out_units):
        return [round(Fraction(u) / Fraction(o) * 2**15) for u, o in zip(units, out_units)]

    out_unit = torch.minimum(unit_x, unit_y).tolist()
    assert int_add.mantissa_x.tolist() == exact(unit_x.tolist(), out_unit)
    assert int_add.mantissa_y.tolist() == exact(unit_y.tolist(), out_unit)
    assert int_add.out_unit.tolist() == out_unit
    assert max(int_add.mantissa_y.tolist()) > 100 * 2**15  # large ratios are exercised
