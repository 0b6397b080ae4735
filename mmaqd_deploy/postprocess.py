"""mmdet's dense-head post-processing in numpy: priors, score filter, box decoding, NMS.

It follows mmdet 3.3's ``BaseDenseHead.predict_by_feat`` for one image, step by
step: per level, sigmoid scores above ``score_thr`` and their ``nms_pre`` best
(``nms_pre`` -1 keeps all but the last, as mmdet's slicing does); box decoding
(RetinaNet: ``DeltaXYWHBBoxCoder``; FCOS: distances from points, after the
ReLU x stride or exp of FCOS's forward); rescaling to the original image;
FCOS's centerness multiplied into the scores; ``min_bbox_size``; class-wise
NMS (mmcv's ``batched_nms``: boxes offset per class) and ``max_per_img``.
Equal scores may be ordered differently from torch's sort.
"""
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

#: mmdet's ``wh_ratio_clip``: box width/height deltas are clamped to +-log(1000/16).
MAX_LOG_RATIO = float(np.abs(np.log(16 / 1000)))


class Detections(NamedTuple):
    """Boxes ``(n, 4)`` x1 y1 x2 y2 in original-image pixels, scores ``(n,)``, labels ``(n,)``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function (float32)."""
    return (1 / (1 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def grid_priors(meta: Dict[str, Any], level: int, height: int, width: int) -> np.ndarray:
    """The priors of one level, in the order of the head's flattened outputs.

    RetinaNet: anchors ``(H * W * A, 4)``, the level's base anchors shifted by
    ``stride * (x, y)``; FCOS: points ``(H * W, 2)`` at ``(x + offset) * stride``.
    """
    stride = meta['strides'][level]
    offset = meta['point_offset'] if meta['head'] == 'fcos' else 0.0
    xs = (np.arange(width, dtype=np.float32) + offset) * stride
    ys = (np.arange(height, dtype=np.float32) + offset) * stride
    xx, yy = np.meshgrid(xs, ys)
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    if meta['head'] == 'fcos':
        return np.stack([xx, yy], axis=1)
    base = np.asarray(meta['base_anchors'][level], dtype=np.float32)
    shifts = np.stack([xx, yy, xx, yy], axis=1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def decode_deltas(anchors: np.ndarray, deltas: np.ndarray, coder: Dict[str, Any],
                  max_shape: Sequence[int]) -> np.ndarray:
    """``DeltaXYWHBBoxCoder.decode``: anchors and normalised deltas to boxes."""
    deltas = deltas * np.asarray(coder['stds'], np.float32) + np.asarray(coder['means'],
                                                                         np.float32)
    centers = (anchors[:, :2] + anchors[:, 2:]) * 0.5
    sizes = anchors[:, 2:] - anchors[:, :2]
    moves = sizes * deltas[:, :2]
    if coder.get('add_ctr_clamp'):
        moves = np.clip(moves, -coder['ctr_clamp'], coder['ctr_clamp'])
        log_sizes = np.minimum(deltas[:, 2:], MAX_LOG_RATIO)
    else:
        log_sizes = np.clip(deltas[:, 2:], -MAX_LOG_RATIO, MAX_LOG_RATIO)
    centers = centers + moves
    sizes = sizes * np.exp(log_sizes)
    boxes = np.concatenate([centers - sizes * 0.5, centers + sizes * 0.5], axis=1)
    return _clip(boxes, max_shape) if coder.get('clip_border', True) else boxes


def decode_distances(points: np.ndarray, distances: np.ndarray,
                     max_shape: Sequence[int], clip: bool = True) -> np.ndarray:
    """``DistancePointBBoxCoder.decode``: left, top, right, bottom distances to boxes."""
    boxes = np.stack([points[:, 0] - distances[:, 0], points[:, 1] - distances[:, 1],
                      points[:, 0] + distances[:, 2], points[:, 1] + distances[:, 3]], axis=1)
    return _clip(boxes, max_shape) if clip else boxes


def _clip(boxes: np.ndarray, max_shape: Sequence[int]) -> np.ndarray:
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, max_shape[1])
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, max_shape[0])
    return boxes


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS (mmcv's, offset 0): indices kept, by descending score."""
    order = np.argsort(-scores, kind='stable')
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep: List[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        width = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        height = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = width * height
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                iou_threshold: float) -> np.ndarray:
    """Class-wise NMS by offsetting each class's boxes (mmcv's ``batched_nms``)."""
    offsets = labels.astype(np.float32) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _top_scores(scores: np.ndarray, score_thr: float,
                nms_pre: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mmdet's ``filter_scores_and_topk``: scores, labels and prior indices kept."""
    priors, classes = np.nonzero(scores > score_thr)
    kept = scores[priors, classes]
    order = np.argsort(-kept, kind='stable')[:min(nms_pre, len(kept))]
    return kept[order], classes[order], priors[order]


def detections(outputs: Dict[str, List[np.ndarray]], meta: Dict[str, Any],
               img_shape: Sequence[int], scale_factor: Sequence[float]) -> Detections:
    """Boxes of one image from the head's outputs.

    Args:
        outputs (dict): Per output kind (``cls_score``, ``bbox_pred`` and for FCOS
            ``centerness``), per level, the graph's ``(1, C, H, W)`` float arrays.
        meta (dict): The detector file's metadata.
        img_shape (tuple[int]): ``(h, w)`` of the resized image (before padding).
        scale_factor (tuple[float]): ``(w_scale, h_scale)`` of the resize.

    Returns:
        Detections: In original-image pixels.
    """
    cfg = meta['test_cfg']
    nms_cfg = cfg.get('nms', {})
    if nms_cfg.get('type', 'nms') != 'nms' or nms_cfg.get('class_agnostic', False):
        raise ValueError(f'test_cfg.nms {nms_cfg}: the runner implements class-wise plain NMS '
                         f'only')
    fcos = meta['head'] == 'fcos'
    nms_pre = int(cfg.get('nms_pre', -1))
    score_thr = float(cfg.get('score_thr', 0))
    all_scores, all_labels, all_boxes, all_factors = [], [], [], []
    for level, cls_score in enumerate(outputs['cls_score']):
        _, channels, height, width = cls_score.shape
        scores = sigmoid(cls_score[0].transpose(1, 2, 0).reshape(-1, len(meta['classes'])))
        deltas = outputs['bbox_pred'][level][0].transpose(1, 2, 0).reshape(-1, 4)
        priors = grid_priors(meta, level, height, width)
        kept, labels, index = _top_scores(scores, score_thr, nms_pre)
        deltas, priors = deltas[index], priors[index]
        if fcos:
            stride = meta['strides'][level]
            deltas = (np.maximum(deltas, 0) * stride if meta['norm_on_bbox']
                      else np.exp(deltas))
            boxes = decode_distances(priors, deltas, img_shape,
                                     meta['bbox_coder'].get('clip_border', True))
            centerness = sigmoid(outputs['centerness'][level][0].reshape(-1))
            all_factors.append(centerness[index])
        else:
            boxes = decode_deltas(priors, deltas, meta['bbox_coder'], img_shape)
        all_scores.append(kept)
        all_labels.append(labels)
        all_boxes.append(boxes)
    scores = np.concatenate(all_scores).astype(np.float32)
    labels = np.concatenate(all_labels).astype(np.int64)
    boxes = np.concatenate(all_boxes).astype(np.float32)
    boxes = boxes / np.tile(np.asarray(scale_factor, np.float32), 2)
    if fcos:
        scores = scores * np.concatenate(all_factors)
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        valid = ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    if len(boxes):
        keep = batched_nms(boxes, scores, labels, float(cfg['nms']['iou_threshold']))
        keep = keep[:int(cfg.get('max_per_img', len(keep)))]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    return Detections(boxes, scores, labels)
