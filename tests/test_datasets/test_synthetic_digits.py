"""The generated digits set (mmaqd.datasets.synthetic_digits)."""
import json
import os.path as osp

import numpy as np
import pytest
from pycocotools.coco import COCO

from mmaqd.datasets import synthetic_digits as synthetic


def test_train_and_val_glyphs_are_disjoint_and_cover_all_classes():
    pools = synthetic.load_glyphs(seed=0)
    train, val = pools['train'][0], pools['val'][0]
    assert len(train) + len(val) == 1797
    assert len(val) == 359
    flat_train = {g.tobytes() for g in train}
    # sklearn's digits hold a few pixel-identical glyphs; almost none may cross the split
    assert sum(g.tobytes() in flat_train for g in val) <= 3
    assert set(pools['val'][1].tolist()) == set(range(10))


def test_render_glyph_box_is_the_tight_ink_box():
    rng = np.random.default_rng(0)
    glyph = np.zeros((8, 8), np.float32)
    glyph[2:6, 3:5] = 1.0
    alpha, (x0, y0, x1, y1) = synthetic.render_glyph(rng, glyph, 40)
    ink = alpha > synthetic.INK_THRESHOLD
    ys, xs = np.nonzero(ink)
    assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert alpha.shape[0] == 40
    # the ink is the middle block of the glyph, so the box is well inside the mask
    assert 0 < y0 < y1 < 40 and 0 < x0 < x1 < alpha.shape[1]


def test_overlap_rule():
    placed = [[0, 0, 10, 10]]
    assert synthetic._overlap_ok([20, 20, 30, 30], placed, 0.25)
    assert synthetic._overlap_ok([8, 0, 18, 10], placed, 0.25)      # covers 20%
    assert not synthetic._overlap_ok([5, 0, 15, 10], placed, 0.25)  # covers 50%


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('synthetic'))
    return out, synthetic.generate(out, num_train=12, num_val=4, size=128, seed=3,
                                   min_size=16, max_size=48)


def test_generated_set_is_valid_coco(small_set):
    out, cocos = small_set
    for split, n in (('train', 12), ('val', 4)):
        coco = COCO(osp.join(out, 'annotations', f'{split}.json'))
        assert len(coco.getImgIds()) == n
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list('0123456789')
        for ann in cocos[split]['annotations']:
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w > 0 and h > 0
            assert ann['area'] == w * h
            assert 1 <= ann['category_id'] <= 10
            assert osp.isfile(osp.join(out, 'images',
                                       coco.loadImgs(ann['image_id'])[0]['file_name']))
    assert len(cocos['train']['annotations']) >= 12


def test_generation_is_deterministic_per_seed(small_set, tmp_path):
    out, cocos = small_set
    again = synthetic.generate(str(tmp_path / 'a'), num_train=12, num_val=4, size=128,
                               seed=3, min_size=16, max_size=48)
    other = synthetic.generate(str(tmp_path / 'b'), num_train=12, num_val=4, size=128,
                               seed=4, min_size=16, max_size=48)
    assert again == cocos
    assert other['train']['annotations'] != cocos['train']['annotations']
    with open(osp.join(out, 'images', 'train_00000.jpg'), 'rb') as a, \
            open(tmp_path / 'a' / 'images' / 'train_00000.jpg', 'rb') as b:
        assert a.read() == b.read()
    with open(osp.join(out, 'annotations', 'val.json')) as f:
        assert json.load(f) == cocos['val']
