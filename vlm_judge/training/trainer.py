"""JudgeSFTTrainer: TRL's SFTTrainer with the judge's answer loss.

Per labelled token (the collator labels the answer word, <|im_end|> and the newline: nothing else):

- the answer position: cross-entropy over the Yes/No pair with target t (1/0 for hard labels, the vote ratio for
  soft labels) plus -log(P(Yes) + P(No)), the mass the full vocabulary gives the two answers:

      loss = -[t * log p + (1 - t) * log(1 - p)] - log(P(Yes) + P(No)),   p = P(Yes) / (P(Yes) + P(No))

  With t in {0, 1} this is exactly the usual next-token NLL of the answer word, so hard labels are plain SFT;
  with soft labels the pair term learns the vote ratio while the mass term keeps the answer a Yes/No (a served
  model's top logprobs must contain them). P(Yes) merges the case/space variants, like the readout
  (protocol.p_defect_from_logits).
- the other labelled tokens: their next-token NLL.

The sum is divided by the number of labelled tokens (by num_items_in_batch under gradient accumulation), the
same normalisation as TRL's loss. Only the labelled positions are projected through the LM head (logits_to_keep),
so a 151k-word vocabulary costs a few rows per sequence, not ~1400.

Optionally (pair_loss_weight > 0), a pairwise term over the images of one prompt in a batch whose targets differ,
the Bradley-Terry loss of reward models and of an SbS verdict: -log sigmoid(z_a - z_b), z = log(p / (1 - p)), a
the row with the higher target, averaged over such pairs and added with that weight (to the training and the
evaluation loss). Two renderings of one scene differ in little but the defect, so the term's gradient is the
defect's; it speeds learning, and makes the raw probabilities more extreme, i.e. less calibrated, which the
temperature recipes/sft.py folds in after training takes back (vlm_judge.calibration).

Evaluation reuses that forward pass (vlm_judge/training/evaluation.py): prediction_step returns each row's
answer-position logits, answer_scores (preprocess_logits_for_metrics) reduces them to p_defect by the protocol's
rule, and JudgeMetrics (compute_metrics) gives eval_roc_auc & co. The same pass gives fit_temperature the
answer words' logits, from which recipes/sft.py fits the readout temperature on the validation split.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from trl import SFTTrainer

from vlm_judge.calibration import TemperatureFit, fit_temperature
from vlm_judge.protocol import JudgePrompt, answer_token_ids, load_prompt, p_defect_from_logits

from .evaluation import EVAL_TRUTH, SCORE_COLUMNS, JudgeMetrics


def answer_loss_terms(
    logits: torch.Tensor, targets: torch.Tensor, defect_ids: list[int], clean_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pair cross-entropy, -log P(Yes or No), log-odds of p_defect) per row from answer-position logits [B, V]."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    defect = torch.logsumexp(log_probs[:, defect_ids], dim=-1)
    clean = torch.logsumexp(log_probs[:, clean_ids], dim=-1)
    mass = torch.logaddexp(defect, clean)  # log(P(Yes) + P(No))
    log_p, log_not_p = defect - mass, clean - mass
    pair_ce = -(targets * log_p + (1 - targets) * log_not_p)
    return pair_ce, -mass, defect - clean


def prompt_pair_loss(log_odds: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor | None:
    """Mean of -log sigmoid(z_a - z_b) over row pairs (a, b) of one group (groups >= 0) with target_a > target_b;
    None when the batch has no such pair."""
    same = (groups[:, None] == groups[None, :]) & (groups[:, None] >= 0)
    ordered = same & (targets[:, None] > targets[None, :])
    if not bool(ordered.any()):
        return None
    margins = log_odds[:, None] - log_odds[None, :]
    return F.softplus(-margins[ordered]).mean()


class GroupedSampler(torch.utils.data.Sampler):
    """Whole groups (all images of one prompt) in a random order, each group's rows together.

    With batches of several groups, a batch holds the clean and defective renderings of the same scenes: the
    gradient parts that only encode the scene cancel between them and the defect is what is left to learn."""

    def __init__(self, groups: list[Any], seed: int = 0) -> None:
        members: dict[Any, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(group, []).append(index)
        self.groups = list(members.values())
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        for g in torch.randperm(len(self.groups), generator=generator).tolist():
            group = self.groups[g]
            yield from (group[i] for i in torch.randperm(len(group), generator=generator).tolist())


class JudgeSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the judge's answer loss (module docstring) and whose evaluation reports the judge's
    metrics; batches come from a JudgeDataCollator (judge_targets and the other EVAL_TRUTH columns).

    group_by: a train-dataset column (e.g. prompt_id) whose groups are kept together in batches. pair_loss_weight:
    the weight of the pairwise term over one prompt's images (module docstring; 0 = off). compute_metrics defaults
    to JudgeMetrics over the collator's defect types, preprocess_logits_for_metrics to answer_scores."""

    def __init__(
        self,
        *args: Any,
        judge_prompt: JudgePrompt | None = None,
        group_by: str | None = None,
        pair_loss_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if pair_loss_weight < 0:
            raise ValueError(f"pair_loss_weight must be >= 0, got {pair_loss_weight}")
        self.group_by = group_by
        self.pair_loss_weight = pair_loss_weight
        collator = kwargs.get("data_collator")
        kwargs.setdefault("compute_metrics", JudgeMetrics(tuple(getattr(collator, "defect_types", ()))))
        kwargs.setdefault("preprocess_logits_for_metrics", self.answer_scores)
        super().__init__(*args, **kwargs)
        self.judge_prompt = judge_prompt or load_prompt()
        self.defect_ids, self.clean_ids = answer_token_ids(self._tokenizer, self.judge_prompt)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.group_by and dataset is not None and self.group_by in dataset.column_names:
            return GroupedSampler(list(dataset[self.group_by]), seed=self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        targets = inputs.pop("judge_targets").float()
        groups = inputs.pop("judge_groups", None)
        for key in EVAL_TRUTH:
            inputs.pop(key, None)  # the rest of the truth is for compute_metrics, not the model
        labels = inputs.pop("labels")
        inputs["use_cache"] = False

        # Hidden state at position j predicts token j + 1.
        next_labels = labels[:, 1:]
        mask = next_labels != -100
        rows, cols = mask.nonzero(as_tuple=True)
        if rows.numel() == 0:
            raise ValueError("a batch has no labelled token: the collator found no assistant answer")
        kept = torch.unique(cols)  # positions any row needs; rows of one batch mostly share them
        outputs = model(**inputs, logits_to_keep=kept)
        logits = outputs.logits[rows, torch.searchsorted(kept, cols)]  # [n_labelled, V]
        tokens = next_labels[rows, cols]

        # The first labelled position of each row is its answer.
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        if int(first.sum()) != labels.size(0):
            raise ValueError("every row needs an answer token; some row has no labelled token")
        pair_ce, neg_mass, log_odds = answer_loss_terms(
            logits[first], targets[rows[first]], self.defect_ids, self.clean_ids
        )
        p_defect = torch.sigmoid(log_odds)
        answer_loss = pair_ce + neg_mass
        rest_loss = F.cross_entropy(logits[~first].float(), tokens[~first], reduction="sum")
        total = answer_loss.sum() + rest_loss
        count = num_items_in_batch if num_items_in_batch is not None else mask.sum()
        loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # As in TRL/Trainer: num_items_in_batch counts every rank's tokens and DDP averages gradients.
            loss = loss * self.accelerator.num_processes
        pair_loss = None
        if self.pair_loss_weight > 0 and groups is not None:
            pair_loss = prompt_pair_loss(log_odds, targets, groups)
        if pair_loss is not None:
            # Trainer does not divide a num_items_in_batch-normalised loss by the accumulation steps: this term too.
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + self.pair_loss_weight * pair_loss / steps

        if mode == "train":  # evaluation reports these through compute_metrics (answer_scores)
            with torch.no_grad():
                hard = (targets >= 0.5).float()
                gather = self.accelerator.gather_for_metrics
                self._metrics[mode]["answer_loss"].append(gather(answer_loss.detach()).mean().item())
                self._metrics[mode]["answer_accuracy"].append(
                    gather(((p_defect >= 0.5).float() == hard).float()).mean().item()
                )
                self._metrics[mode]["answer_mass"].append(gather((-neg_mass).exp().detach()).mean().item())
                if pair_loss is not None:
                    self._metrics[mode]["pair_loss"].append(gather(pair_loss.detach()[None]).mean().item())
        if return_outputs:
            outputs.logits = logits[first]  # each row's answer position: all that evaluation reads
            return loss, outputs
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Trainer's eval step: the loss, each row's answer-position logits [rows, vocab] and, as Trainer's
        "labels", the rows' truth (EVAL_TRUTH tensors)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), outputs.logits, tuple(inputs[key] for key in EVAL_TRUTH)

    def answer_scores(self, logits: torch.Tensor, truth: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """preprocess_logits_for_metrics: answer-position logits [rows, vocab] -> [rows, 3 + variants] = p_defect
        (the protocol's Yes/No rule, as score_images and the served judge read it), answer loss, P(Yes) + P(No),
        then the logits of the answer words' variants (defect_ids, clean_ids: what fit_temperature reads)."""
        pair_ce, neg_mass, _ = answer_loss_terms(logits, truth[0].float(), self.defect_ids, self.clean_ids)
        p_defect = p_defect_from_logits(logits, self.defect_ids, self.clean_ids)
        scores = torch.stack([p_defect, pair_ce + neg_mass, (-neg_mass).exp()], dim=-1)
        return torch.cat([scores, logits[:, [*self.defect_ids, *self.clean_ids]].float()], dim=-1)

    def fit_temperature(self, dataset: Any) -> TemperatureFit:
        """The readout temperature that calibrates the current model on `dataset` (vlm_judge.calibration),
        fitted to the collator's judge_targets (hard labels or vote shares)."""
        output = self.predict(dataset, metric_key_prefix="calibration")
        scores = np.asarray(output.predictions, dtype=np.float64)
        variants = scores[:, SCORE_COLUMNS:]
        targets = np.asarray(output.label_ids[0], dtype=np.float64).ravel()
        split = len(self.defect_ids)
        return fit_temperature(variants[:, :split], variants[:, split:], targets)

    # transformers 5.19 saves Qwen2-VL weights under the original checkpoint names (visual.*, model.layers.*) but
    # Trainer's best-model / resume loader calls model.load_state_dict on them as they are: every key misses, a
    # warning is printed and the *last* weights silently stay. Full-weight checkpoints are therefore loaded through
    # from_pretrained, which applies the key mapping, and checked strictly. Adapters, DeepSpeed and FSDP keep
    # their own loaders.
    def _uses_plain_weights(self, folder: str) -> bool:
        return (
            not is_peft_model(self.model)
            and not self.is_deepspeed_enabled
            and not self.is_fsdp_enabled
            and any(
                os.path.isfile(os.path.join(folder, name))
                for name in ("model.safetensors", "model.safetensors.index.json")
            )
        )

    def _load_full_weights(self, folder: str) -> None:
        model = self.accelerator.unwrap_model(self.model)
        dtype = next(model.parameters()).dtype
        loaded = type(model).from_pretrained(folder, dtype=dtype)
        state = loaded.state_dict()
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Tied weights (lm_head = embed_tokens) may be absent from one side; anything else is a real mismatch.
        tied = {"lm_head.weight"}
        if set(missing) - tied or set(unexpected) - tied:
            raise RuntimeError(
                f"checkpoint {folder} does not fit the model: missing {missing}, unexpected {unexpected}"
            )

    def _load_best_model(self) -> None:
        folder = self.state.best_model_checkpoint
        if folder and self._uses_plain_weights(folder):
            self._load_full_weights(folder)
        else:
            super()._load_best_model()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        if self._uses_plain_weights(resume_from_checkpoint):
            self._load_full_weights(resume_from_checkpoint)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
