"""Label-free pretraining of the embedded default's vision tower (scripts/pretrain_tiny_base.py).

The real recipes fine-tune a pretrained Qwen2-VL; the tiny default gets the low-level half of that from a dense,
label-free task: which generic corruption (vlm_judge.embedded.pretrain.corruptions, a code path of its own, never the
defect renderer or the assessor labels) covers each visual token of a clean synthetic scene.
"""

from .corruptions import CLASSES, CORRUPTIONS, FIRST_KINDS, check_kinds, corrupt_regions
from .vision import pretrain_vision_tower

__all__ = ["CLASSES", "CORRUPTIONS", "FIRST_KINDS", "check_kinds", "corrupt_regions", "pretrain_vision_tower"]
