"""Temperature scaling of the judge's Yes/No readout, fitted on held-out data and folded into the weights.

The judge's probability is p_defect = P(Yes) / (P(Yes) + P(No)) at the answer position. A temperature T divides
every answer-position logit by T before that rule (Guo et al., 2017): the ranking (ROC-AUC, SbS verdicts) is
unchanged, the probabilities get calibrated. T is fitted by minimising the cross-entropy of the readout against
the split's targets (hard labels or vote shares).

Folding T into the model makes every consumer read the calibrated probability without knowing T: the served
model's logprobs, the reference scorer, the RL reward. The LM head is linear without a bias and reads the final
RMSNorm's output (weight * normalised hidden state), so dividing that norm's weight by T divides all logits by T:
the architecture, the config and the checkpoint format stay those of the base model, tied embeddings untouched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vlm_judge.protocol import defect_log_odds_from_logits

# Search range of the temperature; a fit at either end means the readout is degenerate (constant or one-sided).
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    nll_before: float  # mean cross-entropy of the readout at T = 1
    nll_after: float  # ... at the fitted T
    rows: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def at_search_bound(self) -> bool:
        """The cross-entropy kept falling to the end of the search range: the readout carries (almost) no signal on
        the fitting data, or too few rows; the fold then mostly flattens or sharpens every probability."""
        return not MIN_TEMPERATURE * 1.01 < self.temperature < MAX_TEMPERATURE * 0.99


def readout_log_odds(defect_logits: Any, clean_logits: Any, temperature: float = 1.0) -> np.ndarray:
    """log(P(Yes) / P(No)) per row from the answer-position logits of the answer words' variants ([rows, k] each),
    all logits divided by `temperature`: the protocol's rule (variants merged by logsumexp) at that temperature."""
    return _log_odds(*_as_readout(defect_logits, clean_logits), temperature).numpy().astype(np.float64)


def _as_readout(defect_logits: Any, clean_logits: Any) -> tuple[Any, list[int], list[int]]:
    # The variants side by side as one [rows, k_defect + k_clean] tensor, with the columns of each answer word.
    import torch

    defect = torch.as_tensor(np.asarray(defect_logits, dtype=np.float32))
    clean = torch.as_tensor(np.asarray(clean_logits, dtype=np.float32))
    width = defect.shape[-1]
    return torch.cat([defect, clean], dim=-1), list(range(width)), list(range(width, width + clean.shape[-1]))


def _log_odds(logits: Any, defect_ids: list[int], clean_ids: list[int], temperature: float) -> Any:
    return defect_log_odds_from_logits(logits / temperature, defect_ids, clean_ids)


def fit_temperature(defect_logits: Any, clean_logits: Any, targets: Any) -> TemperatureFit:
    """The temperature that minimises the readout's cross-entropy against `targets` (values in [0, 1])."""
    import torch
    import torch.nn.functional as F
    from scipy.optimize import minimize_scalar

    defect = np.asarray(defect_logits, dtype=np.float64)
    clean = np.asarray(clean_logits, dtype=np.float64)
    target = np.asarray(targets, dtype=np.float64).ravel()
    if defect.ndim != 2 or clean.ndim != 2:
        raise ValueError(f"answer logits must be [rows, variants], got shapes {defect.shape} and {clean.shape}")
    if not (len(defect) == len(clean) == len(target)) or len(target) == 0:
        raise ValueError(
            f"fit_temperature needs one target per row and at least one row: {len(defect)} / {len(clean)} rows of "
            f"logits, {len(target)} targets"
        )
    if not np.all(np.isfinite(defect)) or not np.all(np.isfinite(clean)):
        raise ValueError("fit_temperature: the answer logits contain NaN or infinite values")
    if np.any((target < 0) | (target > 1)) or not np.all(np.isfinite(target)):
        raise ValueError("fit_temperature: targets must lie in [0, 1]")

    logits, defect_ids, clean_ids = _as_readout(defect, clean)
    target_tensor = torch.as_tensor(target, dtype=torch.float32)

    def loss(log_t: float) -> float:
        log_odds = _log_odds(logits, defect_ids, clean_ids, math.exp(log_t))
        return float(F.binary_cross_entropy_with_logits(log_odds, target_tensor))

    result = minimize_scalar(
        loss, bounds=(math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)), method="bounded",
        options={"xatol": 1e-4},
    )
    return TemperatureFit(
        temperature=float(math.exp(result.x)),
        nll_before=loss(0.0),
        nll_after=float(result.fun),
        rows=len(target),
    )


def final_norm(model: Any) -> Any:
    """The language model's last RMSNorm, the module the LM head reads (a PEFT wrapper is looked through)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    norm = getattr(decoder, "norm", None)
    weight = getattr(norm, "weight", None)
    if weight is None or getattr(base.get_output_embeddings(), "bias", None) is not None:
        raise ValueError(
            f"cannot fold a temperature into {type(base).__name__}: it needs a decoder whose final norm has a "
            "weight and an LM head without a bias (Qwen2-VL has both)"
        )
    return norm


def fold_temperature(model: Any, temperature: float) -> None:
    """Divide every LM-head logit of `model` by `temperature`, in place (the final norm's weight / T)."""
    import torch

    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    weight = final_norm(model).weight
    with torch.no_grad():
        weight.copy_((weight.float() / temperature).to(weight.dtype))
