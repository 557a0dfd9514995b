"""Dataset rows -> judge chat batches with labels on the answer turn only.

A row of vlm_judge.data.load_judge_dataset (image, label, soft_label, ...) becomes the protocol's chat
(system, user = image + question, assistant = "Yes"/"No") rendered by the processor; TRL's vision collator does
the rendering, image processing and the assistant-only label mask ({% generation %} template). The labelled
tokens are the answer word, <|im_end|> and the newline after it: never a prompt or image token. The collator adds
`judge_targets` (the p_defect target per row: hard 0/1 or the vote ratio) for JudgeSFTTrainer's loss, and the
row's truth for evaluation's metrics (training/evaluation.py): `judge_labels`, `judge_soft_labels` and
`judge_defects` (the defect type's index in `defect_types`); and `judge_groups`, each row's prompt as an index within
the batch (-1 without a prompt_id), for the loss's pairwise term over images of one prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from trl.chat_template_utils import get_training_chat_template, has_generation_markers
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from vlm_judge.images import load_image
from vlm_judge.modeling import max_sequence_tokens, pixel_bounds
from vlm_judge.protocol import JudgePrompt, hf_messages, load_prompt

from .evaluation import UNTYPED

# Columns the trainer keeps (remove_unused_columns=False, so nothing else may reach the collator); prompt_id and
# defect feed the samplers, the collator ignores them.
TRAIN_COLUMNS = ("image", "label", "soft_label", "prompt_id", "defect")


def prepare_split(dataset: Any, max_samples: int | None = None) -> Any:
    """Only the training columns, with images left encoded: the collator decodes them through load_image, the
    same loader the reference scorer (modeling.score_images) and the serving client use."""
    from datasets import Image

    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    columns = [c for c in TRAIN_COLUMNS if c in dataset.column_names]
    return dataset.select_columns(columns).cast_column("image", Image(decode=False))


def _image_source(value: Any) -> Any:
    # datasets' Image(decode=False) gives {"bytes", "path"}; a plain path or PIL image also works.
    if isinstance(value, dict):
        return value.get("bytes") or value["path"]
    return value


def training_chat_template(processor: Any) -> str:
    """The processor's chat template with {% generation %} markers around assistant turns (TRL's patched copy)."""
    template = processor.chat_template
    if has_generation_markers(template):
        return template
    patched = get_training_chat_template(processor)
    if patched is None or not has_generation_markers(patched):
        raise ValueError(
            "TRL has no training chat template (with {% generation %} markers) for this processor"
        )
    return patched


def max_sequence_length(processor: Any, prompt: JudgePrompt | None = None) -> int:
    """Upper bound of a training sequence's length under the processor's pixel bounds: the visual tokens of the
    largest image the bounds allow plus the chat text. A max_length below this would cut image tokens."""
    prompt = prompt or load_prompt()
    return max_sequence_tokens(processor, prompt, answer=prompt.clean_word)


def check_max_length(max_length: int | None, processor: Any, prompt: JudgePrompt | None = None) -> None:
    """TRL truncates to max_length (default 1024): at 1024^2 that would cut 1369 image tokens. None is safe."""
    if max_length is None:
        return
    needed = max_sequence_length(processor, prompt)
    if max_length < needed:
        low, high = pixel_bounds(processor)
        raise ValueError(
            f"max_length={max_length} would truncate image tokens: with pixel bounds [{low}, {high}] a sequence "
            f"needs up to {needed} tokens. Set max_length: null in the recipe (or >= {needed})."
        )


@dataclass
class JudgeDataCollator(DataCollatorForVisionLanguageModeling):
    """TRL's VLM collator on judge rows: messages from the protocol, answer-only labels, judge_targets and the
    evaluation truth.

    defect_types: the types evaluation reports a ROC-AUC for (recipes/sft.py passes every type of the dataset's
    splits); a row of another type (e.g. a type only the training stream renders) is UNTYPED."""

    prompt: JudgePrompt = field(default_factory=load_prompt)
    label_mode: str = "hard"
    defect_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.assistant_only_loss = True
        if self.chat_template is None:
            self.chat_template = training_chat_template(self.processor)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = []
        labels, soft_labels = [], []
        type_index = {name: i for i, name in enumerate(self.defect_types)}
        for example in examples:
            label = int(example["label"])
            labels.append(label)
            soft_labels.append(float(example["soft_label"]))
            image = load_image(_image_source(example["image"])).image
            rows.append(
                {
                    "messages": hf_messages(self.prompt, self.prompt.answer_word(bool(label))),
                    "images": [image],
                }
            )
        batch = self._collate_language_modeling(rows)
        targets = soft_labels if self.label_mode == "soft" else labels
        batch["judge_targets"] = torch.tensor(targets, dtype=torch.float32)
        batch["judge_labels"] = torch.tensor(labels, dtype=torch.long)
        batch["judge_soft_labels"] = torch.tensor(soft_labels, dtype=torch.float32)
        batch["judge_defects"] = torch.tensor(
            [type_index.get(str(example.get("defect", "")), UNTYPED) for example in examples],
            dtype=torch.long,
        )
        prompts: dict[str, int] = {}
        batch["judge_groups"] = torch.tensor(
            [
                prompts.setdefault(str(example["prompt_id"]), len(prompts))
                if example.get("prompt_id") not in (None, "")  # an integer id 0 is a prompt too
                else -1
                for example in examples
            ],
            dtype=torch.long,
        )
        return batch


def find_label_table_or_none(root: str) -> Any:
    """The dataset folder's label table, or None when the folder (or its table) does not exist yet."""
    from vlm_judge.data import DataFormatError, find_label_table

    try:
        return find_label_table(root)
    except DataFormatError:
        return None
