"""tools/deploy/infer.py: image file in, boxes printed and drawn, no mmdet needed."""
import json

import numpy as np
import pytest
from PIL import Image

from mmaqd.apis import deploy_metadata
from mmaqd_deploy import DetectorFile
from mmaqd.integer import convert_detector
from mmaqd.integer.detector import head_outputs
from mmaqd.integer.onnx_kernels import export_kernel_onnx
from tests.conftest import load_tool
from tests.test_integer.tiny_detectors import tiny_config, tiny_detector, tiny_images

infer = load_tool('deploy/infer.py')


def test_infer_prints_and_draws_the_boxes_of_the_detector_file(tmp_path, capsys):
    cfg = tiny_config('fcos', 4)
    cfg.model.test_cfg.score_thr = 0.0
    model = tiny_detector('fcos', 4, cfg=cfg)
    path = str(tmp_path / 'tiny.onnx')
    export_kernel_onnx(convert_detector(model), path, [tiny_images(1, seed=3)],
                       [124, 116, 104], head_outputs(model.bbox_head), deploy_metadata(cfg, model))
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    image = str(tmp_path / 'x.png')
    Image.fromarray(rgb).save(image)
    out = str(tmp_path / 'vis.png')

    rows = infer.main([path, image, '--out', out, '--score-thr', '0'])

    expected = DetectorFile(path)(rgb)
    assert len(rows) == len(expected.boxes) > 0
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == rows
    assert rows[0]['name'] == str(rows[0]['label']) and len(rows[0]['box']) == 4
    assert rows[0]['score'] == pytest.approx(float(expected.scores[0]), abs=1e-4)
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == rgb.shape and not np.array_equal(drawn, rgb)


def test_infer_refuses_a_bad_threshold(capsys):
    with pytest.raises(SystemExit):
        infer.parse_args(['m.onnx', 'x.jpg', '--score-thr', '1.5'])
    assert '--score-thr must be in [0, 1], got 1.5' in capsys.readouterr().err
