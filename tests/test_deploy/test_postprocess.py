"""The numpy post-processing and the detector file give mmdet's boxes on the same outputs."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmaqd.apis import deploy_metadata
from mmaqd_deploy import DetectorFile, detections, grid_priors, nms, prepare_image
from mmaqd_deploy.runner import _resized_size
from mmaqd.integer import convert_detector
from mmaqd.integer.detector import head_outputs
from mmaqd.integer.onnx_export import OnnxDetector
from mmaqd.integer.onnx_kernels import export_kernel_onnx
from tests.conftest import ROOT
from tests.test_integer.tiny_detectors import tiny_config, tiny_detector, tiny_images


def _random_outputs(model, size, seed):
    """Raw head outputs of the right shapes with continuous values (no score ties),
    shifted so that many scores pass score_thr and NMS has work to do."""
    with torch.no_grad():
        raw = model.bbox_head.raw_forward(model.neck(model.backbone(tiny_images(1, size))))
    gen = torch.Generator().manual_seed(seed)
    noisy = []
    for k, kind in enumerate(raw):
        shift = -1.5 if k == 0 else 0.0
        noisy.append([torch.randn(t.shape, generator=gen) * (2.0 if k == 0 else 0.5) + shift
                      for t in kind])
    return tuple(noisy)


def _mmdet(model, raw, img_shape, scale_factor):
    head = model.bbox_head
    outputs = head.finish_raw(raw)
    meta = dict(img_shape=img_shape, ori_shape=img_shape, scale_factor=scale_factor)
    return head.predict_by_feat(*outputs, batch_img_metas=[meta], rescale=True)[0]


@pytest.mark.parametrize('detector', ['retinanet', 'fcos'])
@pytest.mark.parametrize('img_shape, scale_factor, nms_pre', [
    ((64, 64), (1.0, 1.0), 1000), ((50, 60), (0.5, 0.8), 40), ((64, 48), (2.0, 1.5), -1)])
def test_detections_equal_mmdet_predict_by_feat(detector, img_shape, scale_factor, nms_pre):
    cfg = tiny_config(detector, 4)
    model = tiny_detector(detector, 4)
    model.bbox_head.test_cfg.nms_pre = nms_pre
    meta = deploy_metadata(cfg, model)
    raw = _random_outputs(model, 64, seed=hash(img_shape) % 1000)
    expected = _mmdet(model, raw, img_shape, scale_factor)
    got = detections({kind: [t.numpy() for t in raw[k]]
                      for k, kind in enumerate(head_outputs(model.bbox_head))},
                     meta, img_shape, scale_factor)
    assert len(expected.bboxes) > 20  # NMS and the score filter had work to do
    assert len(got.boxes) == len(expected.bboxes)
    np.testing.assert_array_equal(got.labels, expected.labels.numpy())
    np.testing.assert_allclose(got.scores, expected.scores.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.boxes, expected.bboxes.numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize('detector', ['retinanet', 'fcos'])
def test_priors_equal_mmdets(detector):
    cfg = tiny_config(detector, 4)
    model = tiny_detector(detector, 4)
    meta = deploy_metadata(cfg, model)
    sizes = [(8, 6), (4, 3), (2, 2), (1, 1), (1, 1)]
    expected = model.bbox_head.prior_generator.grid_priors(sizes, device='cpu')
    for level, (h, w) in enumerate(sizes):
        np.testing.assert_allclose(grid_priors(meta, level, h, w), expected[level].numpy())


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 9]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # IoU(3, 0) = 90/100 and IoU(3, 1) = 81/109 suppress 0 and 1 at 0.5; at 0.85 only 0
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.85).tolist() == [3, 1, 2]


def test_resize_follows_mmcv():
    assert _resized_size(480, 640, {'scale': [1333, 800], 'keep_ratio': True}) == (800, 1067)
    assert _resized_size(480, 640, {'scale': [320, 256], 'keep_ratio': False}) == (256, 320)
    assert _resized_size(100, 50, {'scale_factor': 1.0, 'keep_ratio': True}) == (100, 50)
    assert _resized_size(100, 50, None) == (100, 50)


def test_detector_file_equals_the_post_processing_of_the_runtime_outputs(tmp_path):
    # Image -> boxes without mmdet: the file's own preprocessing and session give the
    # boxes that the post-processing (equal to mmdet's, tested above) gives for the
    # graph's outputs on the image as mmdet preprocesses it.
    cfg = tiny_config('retinanet', 4)
    cfg.model.test_cfg.score_thr = 0.0
    model = tiny_detector('retinanet', 4, cfg=cfg)
    path = str(tmp_path / 'tiny.onnx')
    meta = deploy_metadata(cfg, model)
    export_kernel_onnx(convert_detector(model), path, [tiny_images(2, seed=3)],
                       [124, 116, 104], head_outputs(model.bbox_head), meta)
    detector = DetectorFile(path)
    assert detector.meta == dict(meta, mean=[124.0, 116.0, 104.0])
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    batch, img_shape, scale_factor = prepare_image(rgb, detector.meta)
    assert batch.shape == (1, 3, 64, 64) and batch.dtype == np.uint8
    assert (img_shape, scale_factor) == ((64, 64), (1.0, 1.0))
    got = detector(rgb)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() - \
        torch.tensor([124.0, 116.0, 104.0]).view(1, 3, 1, 1)
    raw = OnnxDetector(path, 2)(image)
    expected = detections({'cls_score': [t.numpy() for t in raw[0]],
                           'bbox_pred': [t.numpy() for t in raw[1]]}, meta, (64, 64), (1, 1))
    assert len(got.boxes) == 100  # max_per_img
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_detector_file_refuses_a_file_without_metadata(tmp_path):
    model = tiny_detector('fcos', 4)
    path = str(tmp_path / 'bare.onnx')
    export_kernel_onnx(convert_detector(model), path, [tiny_images(1)], [124, 116, 104])
    with pytest.raises(ValueError, match='no mmaqd detector metadata'):
        DetectorFile(path)


def test_metadata_of_the_synthetic_configs():
    for name, head in (('retinanet', 'retinanet'), ('fcos', 'fcos')):
        cfg = Config.fromfile(osp.join(ROOT, f'configs/aqd/{name}_r18_fpn_aqd-w4a4_synthetic.py'))
        model = tiny_detector(name, 4)
        meta = deploy_metadata(cfg, model)
        assert meta['head'] == head and meta['strides'] == [8, 16, 32, 64, 128]
        assert meta['classes'] == [str(i) for i in range(10)]
        assert meta['mean'] == [124.0, 116.0, 104.0] and meta['channel_order'] == 'RGB'
        assert meta['resize'] == {'scale_factor': 1.0, 'keep_ratio': True}
        assert meta['bits'] == {'w_bits': 4, 'a_bits': 4}


def test_prepare_image_resizes_pads_and_orders_channels_as_mmdet():
    meta = {'mean': [124.0, 116.0, 104.0], 'channel_order': 'BGR', 'size_divisor': 32,
            'resize': {'scale': [100, 60], 'keep_ratio': True}}
    rgb = np.zeros((30, 80, 3), np.uint8)
    rgb[..., 0] = 200  # red
    batch, img_shape, scale_factor = prepare_image(rgb, meta)
    # keep_ratio: factor min(100/80, 60/30) = 1.25 -> 38 x 100, padded to 64 x 128
    assert img_shape == (38, 100) and scale_factor == (100 / 80, 38 / 30)
    assert batch.shape == (1, 3, 64, 128)
    assert (batch[0, 2, :38, :100] == 200).all() and (batch[0, 0, :38, :100] == 0).all()
    for c, m in enumerate((124, 116, 104)):  # BGR: the pads hold the mean of that channel
        assert (batch[0, c, 38:, :] == m).all() and (batch[0, c, :, 100:] == m).all()
    with pytest.raises(ValueError, match=r'expected an \(H, W, 3\) uint8 image'):
        prepare_image(rgb.astype(np.float32), meta)


def test_runner_and_package_agree_on_the_metadata_format():
    from mmaqd.apis import METADATA_FORMAT
    from mmaqd_deploy.runner import METADATA_FORMAT as READ
    assert METADATA_FORMAT == READ
