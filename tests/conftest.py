"""Shared test helpers: loading scripts (tools/, .dev_scripts/) and the repository's paths."""
import importlib.util
import os.path as osp
import sys
from types import ModuleType

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(relpath: str) -> ModuleType:
    """Import a script under tools/ (not a package) as a module."""
    return load_script(osp.join('tools', relpath))


def load_script(relpath: str) -> ModuleType:
    """Import a script of the repository (``tools/...``, ``.dev_scripts/...``) as a module."""
    path = osp.join(ROOT, relpath)
    name = 'mmaqd_script_' + relpath.replace('/', '_').replace('.', '_')
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def repo_root() -> str:
    return ROOT
