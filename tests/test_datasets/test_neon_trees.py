"""The NEON tree-crown tiling (mmaqd.datasets.neon_trees) against the wheel's VOC sources."""
import json
import os.path as osp
import zipfile

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mmaqd.datasets import neon_trees as neon


def test_tile_starts_overlapping_and_partition():
    # stride < tile: overlapping, last tile flush with the end
    assert neon.tile_starts(1000, 400, 300) == [0, 300, 600]
    assert neon.tile_starts(1100, 400, 300) == [0, 300, 600, 700]
    # stride == tile: a partition, the last tile may be shorter
    assert neon.tile_starts(1000, 400, 400) == [0, 400, 800]
    assert neon.tile_starts(800, 400, 400) == [0, 400]
    assert neon.tile_starts(345, 400, 300) == [0]


def test_clip_boxes_shift_clip_and_visibility():
    boxes = np.array([
        [110., 120., 130., 150.],  # inside the window
        [90., 100., 110., 110.],   # half outside on x: exactly 50% visible -> kept
        [95., 100., 105., 110.],   # 50% outside as well
        [50., 50., 99., 99.],      # entirely outside
        [190., 190., 230., 230.],  # 25% inside -> dropped
    ])
    out = neon.clip_boxes(boxes, (100, 100, 200, 200), min_visible=0.5)
    np.testing.assert_array_equal(out, [[10., 20., 30., 50.], [0., 0., 10., 10.],
                                        [0., 0., 5., 10.]])


def test_parse_voc_reads_boxes():
    xml = b"""<annotation><size><width>40</width><height>30</height><depth>3</depth></size>
    <object><name>Dead</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>11</xmax>
    <ymax>12</ymax></bndbox></object></annotation>"""
    wh, boxes = neon.parse_voc(xml)
    assert wh == (40, 30)
    np.testing.assert_array_equal(boxes, [[1., 2., 11., 12.]])


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match='stride'):
        neon.convert('unused.whl', str(tmp_path), tile=400, stride=500)
    with pytest.raises(ValueError, match='val_fraction'):
        neon.convert('unused.whl', str(tmp_path), val_fraction=1.5)
    with pytest.raises(FileNotFoundError, match='nope.whl'):
        neon.find_or_fetch_wheel('nope.whl')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    wheel = neon.find_or_fetch_wheel(None)
    out = str(tmp_path_factory.mktemp('neon'))
    cocos = neon.convert(wheel, out)
    with zipfile.ZipFile(wheel) as zf:
        sources = {
            stem: neon.parse_voc(zf.read(f'deepforest/data/{stem}.xml'))[1]
            for stem, _ in neon.SOURCES
        }
    return wheel, out, cocos, sources


def _tile_rect(img):
    return img['x0'], img['y0'], img['x0'] + img['width'], img['y0'] + img['height']


def test_every_box_is_its_source_box_shifted_and_clipped(converted):
    _, _, cocos, sources = converted
    for coco in cocos.values():
        images = {img['id']: img for img in coco['images']}
        for ann in coco['annotations']:
            img = images[ann['image_id']]
            x0, y0, x1, y1 = _tile_rect(img)
            bx, by, bw, bh = ann['bbox']
            src = sources[img['source']]
            clipped = np.stack([
                np.clip(src[:, 0], x0, x1) - x0, np.clip(src[:, 1], y0, y1) - y0,
                np.clip(src[:, 2], x0, x1) - x0, np.clip(src[:, 3], y0, y1) - y0
            ], 1)
            match = np.all(np.isclose(clipped, [bx, by, bx + bw, by + bh]), axis=1)
            assert match.any(), (img['file_name'], ann['bbox'])
            assert 0 <= bx and 0 <= by and bx + bw <= img['width'] and by + bh <= img['height']


def test_fully_inside_boxes_are_shifted_exactly(converted):
    _, _, cocos, sources = converted
    img = next(i for i in cocos['train']['images'] if i['x0'] == 300 and i['y0'] == 300)
    x0, y0, x1, y1 = _tile_rect(img)
    src = sources[img['source']]
    inside = src[(src[:, 0] >= x0) & (src[:, 1] >= y0) & (src[:, 2] <= x1) & (src[:, 3] <= y1)]
    got = sorted(tuple(a['bbox']) for a in cocos['train']['annotations']
                 if a['image_id'] == img['id'])
    want = sorted((b[0] - x0, b[1] - y0, b[2] - b[0], b[3] - b[1]) for b in inside.tolist())
    assert len(want) > 0
    assert set(want) <= set(got)


def test_splits_share_no_pixel_and_val_is_large_enough(converted):
    _, _, cocos, sources = converted
    for t in cocos['train']['images']:
        for v in cocos['val']['images']:
            if t['source'] != v['source']:
                continue
            tx0, ty0, tx1, ty1 = _tile_rect(t)
            vx0, vy0, vx1, vy1 = _tile_rect(v)
            assert min(tx1, vx1) <= max(tx0, vx0) or min(ty1, vy1) <= max(ty0, vy0)
    assert len(cocos['val']['annotations']) >= 250
    # val tiles partition their regions: no val tree is counted twice
    val_area = sum(i['width'] * i['height'] for i in cocos['val']['images'])
    vals = cocos['val']['images']
    for a in range(len(vals)):
        for b in range(a + 1, len(vals)):
            if vals[a]['source'] == vals[b]['source']:
                ax0, ay0, ax1, ay1 = _tile_rect(vals[a])
                bx0, by0, bx1, by1 = _tile_rect(vals[b])
                assert min(ax1, bx1) <= max(ax0, bx0) or min(ay1, by1) <= max(ay0, by0)
    # disjoint tiles whose areas add up to the val regions' area: a partition
    assert val_area == sum(
        w * (h - int(round(h * (1 - 0.34))))
        for (w, h) in [(2299, 2472), (1249, 1035)])
    # all four annotated images of the wheel were read
    assert sum(len(b) for b in sources.values()) == 951


def test_files_load_in_pycocotools_and_match_pixels(converted):
    wheel, out, cocos, _ = converted
    for split in ('train', 'val'):
        coco = COCO(osp.join(out, 'annotations', f'{split}.json'))
        assert len(coco.getImgIds()) == len(cocos[split]['images'])
        assert coco.loadCats(1)[0]['name'] == 'Tree'
    img = cocos['val']['images'][0]
    tile = cv2.imread(osp.join(out, 'images', img['file_name']))
    with zipfile.ZipFile(wheel) as zf:
        buf = np.frombuffer(zf.read(f'deepforest/data/{img["source"]}.png'), np.uint8)
    full = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    x0, y0, x1, y1 = _tile_rect(img)
    np.testing.assert_array_equal(tile, full[y0:y1, x0:x1])


def test_conversion_is_deterministic(converted, tmp_path):
    wheel, out, _, _ = converted
    neon.convert(wheel, str(tmp_path))
    for split in ('train', 'val'):
        with open(osp.join(out, 'annotations', f'{split}.json')) as a, \
                open(osp.join(tmp_path, 'annotations', f'{split}.json')) as b:
            assert json.load(a) == json.load(b)
