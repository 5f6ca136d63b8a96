"""Book-keeping ghost clipping ("ghost-bk") clips exactly like Opacus' reference, in one backward pass.

Each test compares the clipped, summed and averaged gradient the DP optimiser ends up with (no noise unless said)
against "hooks" (Opacus' reference per-sample gradients) and, where it matters, against a by-hand clip of per-sample
gradients computed one sample at a time, so that an error shared by both Opacus paths would still show.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privacy.bookkeeping import BookkeepingLoss
from privacy.dp import GradSampleMode, make_private
from privacy.model import demo_mlp

Data = tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]
RELATIVE = 1e-5  # float32: the bench's exactness tolerance, relative to the largest gradient entry


def private_gradient(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    mode: GradSampleMode,
    *,
    max_grad_norm: float = 1.0,
    noise_multiplier: float = 0.0,
    expected_batch_size: int | None = None,
) -> torch.Tensor:
    """The gradient the DP optimiser hands Adam/SGD after one step on (features, labels): clipped, summed, noised,
    divided by the expected batch size; lr 0 leaves the weights as they were. The model is left hook-free.

    The loader only tells Opacus the expected batch size (default: the batch's own), so the batch may be empty."""
    size = expected_batch_size or len(labels)
    placeholder = TensorDataset(torch.zeros(size, *features.shape[1:]), torch.zeros(size))
    private = make_private(
        PrivacyEngine(),
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        nn.BCEWithLogitsLoss(),
        DataLoader(placeholder, batch_size=size),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        grad_sample_mode=mode,
        poisson_sampling=False,
    )
    try:
        private.optimizer.zero_grad()
        private.criterion(private.module(features).squeeze(-1), labels).backward()
        private.optimizer.step()
    finally:
        private.cleanup()
    return flat_gradient(model)


def flat_gradient(model: nn.Module) -> torch.Tensor:
    gradients = [p.grad for p in model.parameters()]
    assert all(g is not None for g in gradients), "every parameter must have received a gradient"
    return torch.cat([g.flatten() for g in gradients if g is not None]).detach().clone()


def per_sample_gradients(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient by its own backward pass (no Opacus): rows are samples."""
    criterion = nn.BCEWithLogitsLoss()
    rows = []
    for x, y in zip(features, labels, strict=True):
        model.zero_grad()
        criterion(model(x[None]).squeeze(-1), y[None]).backward()
        rows.append(flat_gradient(model))
    model.zero_grad()
    return torch.stack(rows)


def batch(data: Data, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = data
    return torch.as_tensor(features[:size], dtype=torch.float32), torch.as_tensor(labels[:size], dtype=torch.float32)


def assert_same_gradient(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    assert scale > 0
    assert float((actual - expected).abs().max()) <= RELATIVE * scale


def test_gradient_equals_hooks_and_a_by_hand_clip_when_some_samples_are_clipped(breast_cancer: Data) -> None:
    features, labels = batch(breast_cancer, 32)
    gradients = per_sample_gradients(demo_mlp(seed=5), features, labels)
    norms = gradients.norm(dim=1)
    max_grad_norm = float(norms.median())  # half the samples are clipped, half are not
    assert (norms > max_grad_norm).sum() >= 10 and (norms < max_grad_norm).sum() >= 10
    factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # Opacus' clipping factor
    by_hand = (factors[:, None] * gradients).sum(0) / len(labels)

    hooks = private_gradient(demo_mlp(seed=5), features, labels, "hooks", max_grad_norm=max_grad_norm)
    bookkeeping = private_gradient(demo_mlp(seed=5), features, labels, "ghost-bk", max_grad_norm=max_grad_norm)
    assert_same_gradient(hooks, by_hand)
    assert_same_gradient(bookkeeping, hooks)
    assert not torch.allclose(bookkeeping, gradients.mean(0), rtol=1e-3), "clipping changed nothing?"


def test_huge_gradients_come_out_clipped_to_max_grad_norm(breast_cancer: Data) -> None:
    """Would fail if clipping were skipped: per-sample gradients of norm ~1e4 must each leave with norm C."""
    features = batch(breast_cancer, 4)[0] * 1e4
    with torch.no_grad():
        labels = (demo_mlp(seed=2)(features).squeeze(-1) < 0).float()  # confidently wrong: the loss does not saturate
    unclipped = per_sample_gradients(demo_mlp(seed=2), features, labels).norm(dim=1)
    assert float(unclipped.min()) > 1e3
    for row in range(len(labels)):
        gradient = private_gradient(demo_mlp(seed=2), features[row : row + 1], labels[row : row + 1], "ghost-bk")
        assert float(gradient.norm()) == pytest.approx(1.0, rel=1e-5)  # C = 1, batch of one: no averaging
    mean = private_gradient(demo_mlp(seed=2), features, labels, "ghost-bk")
    assert float(mean.norm()) <= 1.0 + 1e-6


def test_empty_poisson_batch_still_steps_with_pure_noise(breast_cancer: Data) -> None:
    """A Poisson batch of size 0 counts in the accounting, so it must step: the gradient is noise alone, the same
    noise hooks draws from the same seed."""
    features, labels = batch(breast_cancer, 0)
    noised = {}
    for mode in ("hooks", "ghost-bk"):
        torch.manual_seed(11)
        noised[mode] = private_gradient(
            demo_mlp(seed=1),
            features,
            labels,
            mode,
            noise_multiplier=1.5,
            expected_batch_size=8,
        )
    assert torch.isfinite(noised["ghost-bk"]).all()
    # Noise of std σ·C / expected batch size = 1.5 / 8 on each of 4,097 entries.
    assert float(noised["ghost-bk"].std()) == pytest.approx(1.5 / 8, rel=0.1)
    assert_same_gradient(noised["ghost-bk"], noised["hooks"])


def test_a_non_linear_trainable_layer_falls_back_to_opacus_ghost_naming_it(breast_cancer: Data) -> None:
    features, labels = batch(breast_cancer, 16)

    def model() -> nn.Module:
        torch.manual_seed(4)
        return nn.Sequential(nn.Linear(30, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1))

    with pytest.warns(UserWarning, match=r"falls back to Opacus' 'ghost'.*'1' is a LayerNorm"):
        fallback = private_gradient(model(), features, labels, "ghost-bk", max_grad_norm=0.05)
    assert_same_gradient(fallback, private_gradient(model(), features, labels, "hooks", max_grad_norm=0.05))

    engine = PrivacyEngine()
    wrapped = model()
    private = make_private(
        engine,
        wrapped,
        torch.optim.SGD(wrapped.parameters(), lr=0.0),
        nn.BCEWithLogitsLoss(),
        DataLoader(TensorDataset(features, labels), batch_size=16),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        grad_sample_mode="ghost",
    )
    with pytest.raises(NotImplementedError, match=r"'1' is a LayerNorm"):
        BookkeepingLoss(private.module, private.optimizer, nn.BCEWithLogitsLoss())
    private.cleanup()


def test_linear_layers_over_positions_clip_like_hooks() -> None:
    """(batch, positions, features) inputs: the per-sample gradient Σ_t g_t a_tᵀ does not factor, Opacus' norm
    sampler covers it and the book-keeping product sums over positions."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(12, 5, 6, generator=generator)
    labels = (torch.rand(12, generator=generator) > 0.5).float()

    def model() -> nn.Module:
        torch.manual_seed(8)
        return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Flatten(), nn.Linear(20, 1))

    hooks = private_gradient(model(), features, labels, "hooks", max_grad_norm=0.1)
    assert_same_gradient(private_gradient(model(), features, labels, "ghost-bk", max_grad_norm=0.1), hooks)


def test_a_layer_run_twice_is_refused_and_cleanup_leaves_no_hooks(breast_cancer: Data) -> None:
    features, labels = batch(breast_cancer, 8)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(30, 30)
            self.head = nn.Linear(30, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.shared(torch.relu(self.shared(x))))  # type: ignore[no-any-return]

    model = Twice()
    with warnings.catch_warnings(), pytest.raises(NotImplementedError, match=r"'shared' ran twice"):
        warnings.simplefilter("ignore")
        private_gradient(model, features, labels, "ghost-bk")
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
