"""Test (evaluate) a quantized detector's integer engine through mmdet's evaluator."""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from mmaqd.integer import convert_detector
from mmaqd.integer.onnx_export import OnnxDetector, export_onnx
from mmaqd.integer.onnx_kernels import export_kernel_onnx

#: The ``arith`` values: the engine, its float64 simulation, the two ONNX exports.
ARITHS = ('int', 'float', 'onnx', 'onnx-qdq')
#: Training images that set the integer-kernel export's 8-bit scales.
CALIBRATION_IMAGES = 16


@HOOKS.register_module()
class IntegerInferenceHook(Hook):
    """Before testing, convert the detector to its integer engine and predict with it.

    The detector predicts through the engine (integer image -> integer head
    outputs, times their units; see ``set_integer_backend`` of the AQD detectors);
    mmdet's own post-processing (sigmoid, box decoding, NMS) and evaluator are
    unchanged.

    Args:
        arith (str): ``'int'`` for the integer engine, ``'float'`` for its float64
            deploy-mode simulation, ``'onnx'`` for the integer-kernel ONNX export
            (the deployed file; its 8-bit scales calibrated on the first
            :data:`CALIBRATION_IMAGES` training images) and ``'onnx-qdq'`` for the
            QDQ export, both run in onnxruntime (needs requirements/deploy.txt).
            Defaults to ``'int'``.
    """

    priority = 'LOW'  # after QuantCalibrationHook

    def __init__(self, arith: str = 'int') -> None:
        if arith not in ARITHS:
            raise ValueError(f'IntegerInferenceHook: arith must be one of {ARITHS}, '
                             f'got {arith!r}')
        self.arith = arith
        self.engine = None

    def before_test(self, runner) -> None:
        """Convert the (loaded) model and route its predictions through the engine."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        device = next(model.parameters()).device
        if device.type != 'cpu':
            raise RuntimeError(f'IntegerInferenceHook: the integer engine runs on the CPU (int64 '
                               f'kernels); the model is on {device}. Test it on a CPU machine, '
                               f'e.g. with CUDA_VISIBLE_DEVICES= .')
        model.eval()
        engine = convert_detector(model)
        arith = self.arith
        if arith.startswith('onnx'):
            kinds = len(engine.head.output_units())
            if arith == 'onnx':
                from mmaqd.apis import calibration_images, example_shape
                images, source = calibration_images(runner.cfg, model, CALIBRATION_IMAGES,
                                                    example_shape(runner.cfg)[0])
                onnx_model, report = export_kernel_onnx(
                    engine, None, images, model.data_preprocessor.mean.flatten().tolist())
                runner.logger.info(f'IntegerInferenceHook: 8-bit scales of the integer-kernel '
                                   f'graph from {len(images)} batches of {source}')
                if report['clamped_weights']:
                    runner.logger.warning(f'IntegerInferenceHook: weight codes clamped to fit '
                                          f'the 8-bit containers: {report["clamped_weights"]}')
            else:
                onnx_model, _ = export_onnx(engine, None, torch.zeros(1, 3, 128, 128))
            backend = OnnxDetector(onnx_model, kinds)
        else:

            def backend(batch_inputs):
                return engine.real_outputs(engine(batch_inputs, arith))

        model.set_integer_backend(backend)
        self.engine = engine
        layers = sum(1 for _ in engine.modules())
        runner.logger.info(f'IntegerInferenceHook: testing the integer engine '
                           f'(arith={arith!r}, {layers} modules)')
