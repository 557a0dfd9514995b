"""Where the server's per-image preprocessing goes: the steps vLLM's API server runs for one 1024x1024 request,
timed one by one in this process on the same kind of image bench_serving.py sends.

    python scripts/bench_preprocess.py [--model DIR] [--images 16]

Stages (mean ms per image): ``client_encode`` (vlm_judge.images.to_data_url: read, full decode to reject broken
files, base64), then the server side: ``base64_decode``, ``image_decode`` (PIL open + load + RGB), ``hf_processor``
(the judge's image processor as saved with it, native 1024 bounds; ``backend`` torchvision and pil, with the largest pixel
difference between them), ``mm_hash`` (vLLM's MultiModalHasher over the decoded image, what its processor cache
keys on). ``pixel_values_mb`` is what then crosses to the engine process. Compare the sum with bench_serving.py's
``server_preprocess_ms``: the rest is chat rendering, tokenisation, IPC and the API server's event loop.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))


def mean_ms(function, items) -> tuple[float, list]:
    outputs = []
    start = time.perf_counter()
    for item in items:
        outputs.append(function(item))
    return round((time.perf_counter() - start) * 1000 / len(items), 2), outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="judge model dir (default: build the tiny model)")
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from bench_serving import judge_model_dir, make_images
    from PIL import Image
    from transformers import AutoImageProcessor
    from vllm.multimodal.hasher import MultiModalHasher

    from vlm_judge.images import to_data_url

    work = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    model_dir = judge_model_dir(args.model, work)
    paths = make_images(work, args.images)

    report: dict = {"images": len(paths), "image_size": [1024, 1024], "torch_threads": torch.get_num_threads(), "stages_ms": {}}
    stages = report["stages_ms"]
    stages["client_encode"], urls = mean_ms(to_data_url, paths)
    stages["base64_decode"], raws = mean_ms(lambda url: base64.b64decode(url.split(",", 1)[1]), urls)

    def decode(raw: bytes) -> Image.Image:
        image = Image.open(io.BytesIO(raw))
        image.load()
        return image.convert("RGB")

    stages["image_decode"], images = mean_ms(decode, raws)
    processors = {}
    for backend in ("torchvision", "pil"):
        processor = AutoImageProcessor.from_pretrained(model_dir, backend=backend)
        processor(images=images[:1], return_tensors="pt")  # warm-up
        # Outputs are dropped as they come, as a server does once they are sent (keeping 16 x 25 MB would time
        # the page faults of fresh allocations instead).
        stages[f"hf_processor_{backend}"], _ = mean_ms(
            lambda image, p=processor: p(images=[image], return_tensors="pt")["image_grid_thw"], images
        )
        processors[backend] = processor
    stages["mm_hash"], _ = mean_ms(lambda image: MultiModalHasher.hash_kwargs("blake3", image=image), images)
    diffs = []
    for image in images:
        fast, slow = (processors[b](images=[image], return_tensors="pt") for b in ("torchvision", "pil"))
        diffs.append(float(np.abs(fast["pixel_values"].numpy() - slow["pixel_values"].numpy()).max()))
    report["pixel_values_mb"] = round(fast["pixel_values"].numel() * 4 / 2**20, 1)
    report["grid_thw"] = fast["image_grid_thw"].tolist()[0]
    # in normalised units (std ~0.27 of the 0-1 range): the two backends resize 1024 -> 1036 differently
    report["max_abs_diff_torchvision_vs_pil"] = round(max(diffs), 4)
    report["server_side_sum_ms"] = round(
        stages["base64_decode"] + stages["image_decode"] + stages["hf_processor_torchvision"] + stages["mm_hash"], 1
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
