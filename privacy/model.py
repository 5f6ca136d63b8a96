"""The demo diagnostic model and the flat-vector view of a model's parameters that HE aggregation works on.

Why flat vectors: CKKS encrypts vectors of reals, and the aggregator must not need to know the model's structure,
only its length. Every hospital builds the same architecture (`demo_mlp`), so `parameters_to_vector` /
`load_parameters` (fixed parameter order) are all that federated averaging needs.

API
---
- `demo_mlp(n_features=30, hidden=(64, 32), seed=None)`: binary classifier 30→64→32→1 returning one logit
  (use `BCEWithLogitsLoss`); `seed` makes the initial weights reproducible without touching torch's global RNG.
- `parameters_to_vector(model) -> np.ndarray` (float64, fixed order), `load_parameters(model, vector)`.
- `predict_proba(model, features) -> np.ndarray`: probabilities of the positive class.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn


def demo_mlp(n_features: int = 30, hidden: Sequence[int] = (64, 32), *, seed: int | None = None) -> nn.Sequential:
    """Build the demo MLP (n_features → hidden… → 1 logit) with ReLU activations."""
    if n_features < 1 or any(width < 1 for width in hidden):
        raise ValueError(f"layer widths must be ≥ 1, got n_features={n_features}, hidden={tuple(hidden)}")
    widths = [n_features, *hidden]
    # fork_rng: a seeded build must not change the caller's global torch RNG stream.
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], 1))
        return nn.Sequential(*layers)


def parameters_to_vector(model: nn.Module) -> npt.NDArray[np.float64]:
    """All trainable parameters of `model` as one flat float64 vector, in `model.parameters()` order."""
    with torch.no_grad():
        flat = nn.utils.parameters_to_vector(p for p in model.parameters() if p.requires_grad)
    return flat.detach().cpu().numpy().astype(np.float64)


def load_parameters(model: nn.Module, vector: npt.ArrayLike) -> None:
    """Overwrite `model`'s trainable parameters with `vector` (inverse of `parameters_to_vector`)."""
    values = np.asarray(vector, dtype=np.float64)
    parameters = [p for p in model.parameters() if p.requires_grad]
    expected = sum(p.numel() for p in parameters)
    if values.ndim != 1 or values.size != expected:
        raise ValueError(f"parameter vector must be flat with {expected} values for this model, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("parameter vector contains NaN or infinite values")
    with torch.no_grad():
        nn.utils.vector_to_parameters(torch.as_tensor(values, dtype=parameters[0].dtype), parameters)


def predict_proba(model: nn.Module, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Probability of the positive class for each row of `features`."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(np.asarray(features), dtype=torch.float32)).squeeze(-1)
    return torch.sigmoid(logits).numpy().astype(np.float64)
