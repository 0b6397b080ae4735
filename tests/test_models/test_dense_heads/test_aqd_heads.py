"""AQD heads: mmdet loss sanity checks, per-level BN isolation, level-count errors."""
import pytest
import torch
from mmengine.structures import InstanceData

import mmaqd  # noqa: F401
from mmaqd.quant import MultiLevelBN, QConv
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

register_all_modules()

# P7 of a 256 px image is 2x2: BN in training needs more than one value per channel.
IMG = 256
STRIDES = [8, 16, 32, 64, 128]
METAS = [dict(img_shape=(IMG, IMG, 3), pad_shape=(IMG, IMG, 3), scale_factor=1,
              batch_input_shape=(IMG, IMG))]


def retina_head(**kwargs):
    cfg = dict(
        type='AQDRetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=2,
        norm_cfg=dict(type='MultiLevelBN'),
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[1.0], strides=STRIDES),
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                          min_pos_iou=0, ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
            debug=False))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def fcos_head(**kwargs):
    cfg = dict(type='AQDFCOSHead', num_classes=3, in_channels=8, feat_channels=8,
               stacked_convs=2, strides=STRIDES, norm_cfg=dict(type='MultiLevelBN'))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(1, 8, IMG // s, IMG // s, generator=g) for s in STRIDES)


def gt(with_box: bool) -> InstanceData:
    if with_box:
        return InstanceData(bboxes=torch.tensor([[10., 12., 50., 60.]]),
                            labels=torch.tensor([1]))
    return InstanceData(bboxes=torch.empty(0, 4), labels=torch.empty(0, dtype=torch.long))


def total(loss):
    return sum(loss) if isinstance(loss, (list, tuple)) else loss


@pytest.mark.parametrize('build', [retina_head, fcos_head], ids=['retina', 'fcos'])
def test_empty_gt_gives_only_cls_loss_and_one_box_gives_both(build):
    head = build()
    head.init_weights()
    outs = head(features())
    empty = head.loss_by_feat(*outs, [gt(False)], METAS)
    assert total(empty['loss_cls']).item() > 0
    box_keys = [k for k in empty if k != 'loss_cls']
    assert box_keys
    for key in box_keys:
        assert total(empty[key]).item() == 0, key
    one = head.loss_by_feat(*outs, [gt(True)], METAS)
    for key, value in one.items():
        assert total(value).item() > 0, key


@pytest.mark.parametrize('build', [retina_head, fcos_head], ids=['retina', 'fcos'])
def test_train_forward_updates_only_the_levels_it_saw(build):
    head = build()
    head.train()
    bns = [m for m in head.modules() if isinstance(m, MultiLevelBN)]
    assert len(bns) == 4 and all(bn.num_levels == 5 for bn in bns)
    before = [[bn.bns[i].running_mean.clone() for i in range(5)] for bn in bns]
    feats = features()
    # Run the head on levels 1 and 3 only.
    for level in (1, 3):
        if build is fcos_head:
            head.forward_single(feats[level], head.scales[level], STRIDES[level], level)
        else:
            head.forward_single(feats[level], level)
    for bn, old in zip(bns, before):
        for i in range(5):
            changed = not torch.equal(bn.bns[i].running_mean, old[i])
            assert changed == (i in (1, 3)), (i, changed)


@pytest.mark.parametrize('build', [retina_head, fcos_head], ids=['retina', 'fcos'])
def test_tower_convs_are_shared_across_levels(build):
    head = build()
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    # 2 towers x 2 convs, plus predictors: one set of weights serves every level
    assert len([c for c in convs if c.out_channels == 8]) == 4


def test_level_count_mismatches_are_refused():
    with pytest.raises(ValueError, match='num_levels=4'):
        retina_head(norm_cfg=dict(type='MultiLevelBN', num_levels=4))
    with pytest.raises(ValueError, match='num_levels=3'):
        fcos_head(num_levels=3)
    head = retina_head()
    with pytest.raises(ValueError, match='got 4 feature levels'):
        head(features()[:4])
    with pytest.raises(IndexError, match='level 5'):
        head.forward_single(features()[0], 5)


def test_shared_bn_and_gn_norms_are_accepted():
    bn_head = retina_head(norm_cfg=dict(type='BN'))
    gn_head = fcos_head(norm_cfg=dict(type='GN', num_groups=4))
    for head in (bn_head, gn_head):
        cls_scores = head(features())[0]
        assert [tuple(c.shape[-2:]) for c in cls_scores] == [(32, 32), (16, 16), (8, 8),
                                                             (4, 4), (2, 2)]
    assert bn_head.cls_convs[0].bn.__class__ is torch.nn.BatchNorm2d


@pytest.mark.parametrize('norm', ['SharedLevelBN', 'SyncMultiLevelBN'])
def test_level_norm_flavours_get_the_level_count(norm):
    head = fcos_head(norm_cfg=dict(type=norm))
    norms = [m.bn for m in head.cls_convs]
    assert all(type(n).__name__ == norm and n.num_levels == 5 for n in norms)
    head(features())


@pytest.mark.parametrize('build', [retina_head, fcos_head], ids=['retina', 'fcos'])
def test_quantized_head_has_one_activation_quantizer_per_level(build):
    head = build(conv_cfg=dict(type='QConv', w_bits=4, a_bits=4))
    qconvs = [m for m in head.modules() if isinstance(m, QConv)]
    # towers (2 x 2) + predictors (2 for RetinaNet, 3 for FCOS): all shared, 5 levels
    assert len(qconvs) == (6 if build is retina_head else 7)
    assert all(len(c.input_quantizers) == 5 for c in qconvs)
    feats = features()
    head.train()
    # Level 2 only: LSQ steps initialise on first use, so only level 2's are set.
    if build is fcos_head:
        head.forward_single(feats[2], head.scales[2], STRIDES[2], 2)
    else:
        head.forward_single(feats[2], 2)
    for conv in qconvs:
        seen = [bool(q.initialized) for q in conv.input_quantizers]
        assert seen == [False, False, True, False, False]


@pytest.mark.parametrize('build', [retina_head, fcos_head], ids=['retina', 'fcos'])
def test_forward_takes_any_iterable_of_levels(build):
    """mmdet's own head tests pass a generator of feature maps."""
    head = build().eval()
    with torch.no_grad():
        expected = head(features())
        got = head(f for f in features())
    assert len(got) == len(expected)
    for kind_got, kind_expected in zip(got, expected):
        assert all(torch.equal(a, b) for a, b in zip(kind_got, kind_expected))
