"""The runner package needs onnxruntime, numpy and Pillow, not torch or mmdet."""
import subprocess
import sys


def test_mmaqd_deploy_imports_without_torch_mmdet_or_mmaqd():
    code = ('import sys, mmaqd_deploy; from mmaqd_deploy import DetectorFile, detections; '
            'print(sorted(m for m in ("torch", "mmdet", "mmengine", "mmcv", "mmaqd") '
            'if m in sys.modules))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd='/')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'
