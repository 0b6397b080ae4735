"""A detector file (integer-kernel ONNX + metadata) as a function from an image to boxes."""
import json
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .postprocess import Detections, detections

#: The metadata layout this runner reads (written by ``mmaqd.apis.deploy``).
METADATA_FORMAT = 'mmaqd-detector-1'


def _resized_size(height: int, width: int, resize: Optional[Dict[str, Any]]) -> Tuple[int, int]:
    """``(h, w)`` after mmcv's Resize (``scale`` (w, h) with or without keep_ratio, or
    ``scale_factor``)."""
    if not resize:
        return height, width
    if resize.get('scale') is not None:
        scale = resize['scale']
        scale = (scale, scale) if isinstance(scale, (int, float)) else scale
        if not resize.get('keep_ratio', False):
            return int(scale[1]), int(scale[0])
        factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    else:
        factor = resize.get('scale_factor', 1.0)
        if isinstance(factor, (list, tuple)):  # (w, h) factors
            return int(height * factor[1] + 0.5), int(width * factor[0] + 0.5)
        factor = float(factor)
    return int(height * factor + 0.5), int(width * factor + 0.5)


def prepare_image(image: np.ndarray, meta: Dict[str, Any]) -> Tuple[np.ndarray, Tuple[int, int],
                                                                      Tuple[float, float]]:
    """An RGB ``(H, W, 3)`` uint8 image as the graph's input, as mmdet's test pipeline.

    Resize (bilinear: OpenCV's, as mmcv, when ``cv2`` is installed, else Pillow's,
    which smooths when it shrinks), channel order, padding to the size divisor with
    the mean (the value mmdet's preprocessor pads with, after subtracting it).

    Returns:
        tuple: The ``(1, 3, H', W')`` uint8 batch, the resized ``(h, w)`` and the
        ``(w_scale, h_scale)`` of the resize.
    """
    from PIL import Image
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) uint8 image, got {image.dtype} '
                         f'{tuple(image.shape)}')
    height, width = image.shape[:2]
    new_h, new_w = _resized_size(height, width, meta.get('resize'))
    if (new_h, new_w) != (height, width):
        try:
            import cv2
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        except ImportError:
            image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    if meta.get('channel_order', 'RGB') == 'BGR':
        image = image[:, :, ::-1]
    divisor = max(int(meta.get('size_divisor', 1)), 1)
    pad_h, pad_w = -new_h % divisor, -new_w % divisor
    mean = np.round(np.asarray(meta['mean'])).astype(np.uint8)
    batch = np.empty((new_h + pad_h, new_w + pad_w, 3), np.uint8)
    batch[:] = mean
    batch[:new_h, :new_w] = image
    return (np.ascontiguousarray(batch.transpose(2, 0, 1)[None]), (new_h, new_w),
            (new_w / width, new_h / height))


class DetectorFile:
    """An exported detector in onnxruntime: RGB image -> :class:`Detections`.

    Args:
        path (str): The ``.onnx`` file (integer-kernel export with metadata).
        threads (int, optional): onnxruntime's intra-op threads.

    Raises:
        ValueError: If the file has no mmaqd detector metadata.
    """

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        props = self.session.get_modelmeta().custom_metadata_map
        if 'format' not in props or 'head' not in props:
            raise ValueError(f'{path}: no mmaqd detector metadata (export it with '
                             f'tools/export_onnx.py)')
        self.meta = {key: json.loads(value) for key, value in props.items()}
        if self.meta['format'] != METADATA_FORMAT:
            raise ValueError(f'{path}: metadata format {self.meta["format"]!r}; this runner '
                             f'reads {METADATA_FORMAT!r}')
        self.names = [o.name for o in self.session.get_outputs()]

    def outputs(self, batch: np.ndarray) -> Dict[str, list]:
        """The graph's head outputs per kind and level."""
        values = self.session.run(self.names, {'image': batch})
        kinds: Dict[str, list] = {}
        for name, value in zip(self.names, values):
            kind, level = name.rsplit('_', 1)
            kinds.setdefault(kind, []).append((int(level), value))
        return {kind: [v for _, v in sorted(levels)] for kind, levels in kinds.items()}

    def __call__(self, image: np.ndarray) -> Detections:
        """Detect the objects of one RGB ``(H, W, 3)`` uint8 image."""
        batch, img_shape, scale_factor = prepare_image(image, self.meta)
        return detections(self.outputs(batch), self.meta, img_shape, scale_factor)
