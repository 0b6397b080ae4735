"""Running an exported detector without mmdet or torch: onnxruntime, numpy and Pillow.

A package of its own (not under :mod:`mmaqd`, whose import registers mmdet modules),
so that a device needs only this folder, the ``.onnx`` file and those three packages.

:class:`DetectorFile` reads an integer-kernel ONNX export and its metadata
(:func:`mmaqd.apis.deploy.deploy_metadata`), prepares an image as mmdet's test
pipeline does, runs the graph and turns its head outputs into boxes with
:func:`~.postprocess.detections`, the numpy form of mmdet's post-processing.
"""
from .postprocess import Detections, detections, grid_priors, nms
from .runner import DetectorFile, prepare_image

__all__ = ['Detections', 'detections', 'grid_priors', 'nms', 'DetectorFile', 'prepare_image']
