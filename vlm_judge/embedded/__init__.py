"""The embedded default, in one place: what lets every path run end to end with no GPU and no network.

- tiny_model: a tiny Qwen2-VL of the real architecture (random init, local tokenizer and processor), loaded
  through the same from_pretrained code as Qwen/Qwen2-VL-2B-Instruct;
- pretrain/ and assets/tiny-base-224: the label-free pretraining of its vision tower and the committed base it
  produced (scripts/pretrain_tiny_base.py; pretraining.json records every stage);
- synthetic/: synthetic assessor logs (scenes, renderer, defect registry, simulated assessors) and the training
  stream that renders new clean/defective twins on the fly.

A recipe asks for it with its `tiny_model`, `synthetic` and `synthetic_stream` fields (recipes/tiny-cpu.yaml);
recipes/sft.py makes one call, `prepare(script_args, model_args, training_args)`, which also returns the rendered
training split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from vlm_judge.embedded.tiny_model import TinyModelSpec, make_tiny_model

logger = logging.getLogger(__name__)


def prepare(script_args: Any, model_args: Any, training_args: Any) -> Any:
    """What a recipe asks of the embedded default, in one call: the tiny model built (`tiny_model`) and the
    synthetic logs rendered (`synthetic`) once, the main process first; returns the training split rendered on the
    fly (`synthetic_stream`), or None when the recipe trains on its dataset's own train split."""
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset
    from vlm_judge.training.collate import find_label_table_or_none

    with training_args.main_process_first(desc="prepare the embedded default"):
        if script_args.tiny_model is not None:
            model_args.model_name_or_path = str(tiny_model_dir(script_args.tiny_model, model_args.model_name_or_path))
        if script_args.synthetic is not None and find_label_table_or_none(script_args.dataset_dir) is None:
            generate_synthetic_dataset(script_args.dataset_dir, **script_args.synthetic)
    if script_args.synthetic_stream is None:
        return None
    from vlm_judge.embedded.synthetic.stream import training_stream

    if training_args.max_steps <= 0:
        raise ValueError("synthetic_stream renders an endless train split: set max_steps")
    rows_per_step = (
        training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    )
    logger.info("train split: rendered on the fly (%s), %d rows per step", script_args.synthetic_stream, rows_per_step)
    return training_stream(script_args.synthetic or {}, {**script_args.synthetic_stream, "batch_size": rows_per_step})


def tiny_model_dir(spec_fields: dict[str, Any], path: str | None = None) -> Path:
    """Build the tiny random-init Qwen2-VL (vlm_judge.embedded.tiny_model) unless `path` already holds the same spec.

    Without a path it goes to models/tiny-qwen2-vl-<hash of the spec>, so a changed spec never reuses a stale
    model. An existing folder with a different spec is an error (a trained model may be built on it)."""
    known = {f.name for f in fields(TinyModelSpec)}
    unknown = sorted(set(spec_fields) - known)
    if unknown:
        raise ValueError(f"tiny_model has unknown fields {unknown}; TinyModelSpec fields: {sorted(known)}")
    spec = TinyModelSpec(**spec_fields)
    wanted = asdict(spec)
    if path is None:
        digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:10]
        path = f"models/tiny-qwen2-vl-{digest}"
    folder = Path(path)
    spec_file = folder / "tiny_model_spec.json"
    if (folder / "config.json").is_file():
        found = json.loads(spec_file.read_text()) if spec_file.is_file() else None
        if found is not None:  # a field added since that model was built has its default there
            found = {**asdict(TinyModelSpec()), **found}
        if found != wanted:
            raise ValueError(
                f"{folder} holds a different model (spec {found}) than the recipe's tiny_model {wanted}; "
                "delete it or leave model_name_or_path out to get a folder named by the spec"
            )
        return folder
    logger.info("building the tiny Qwen2-VL in %s: %s", folder, wanted)
    return make_tiny_model(folder, spec)
