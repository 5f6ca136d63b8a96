"""Book-keeping ghost clipping ("ghost-bk"): exact per-sample clipping of `nn.Linear` networks in one backward pass.

Why: Opacus' ghost clipping (`grad_sample_mode="ghost"`) finds per-sample gradient norms without materialising
per-sample gradients, but `DPTensorFastGradientClipping.backward` pays two full backward passes: the first computes
every weight gradient only to throw it away, the second recomputes them all with the loss reweighted by the clipping
coefficients. For an `nn.Linear` layer the per-sample weight gradient is Σ_t g_it a_itᵀ (output gradient times
input, summed over positions t when inputs carry a sequence axis; for (batch, features) inputs simply g_i a_iᵀ), so
once the clipping coefficients c are known the clipped summed gradient is one matrix product, W.grad = (c ⊙ G)ᵀ A
and b.grad = Σ c_i g_i: "book-keeping" (Bu et al., "Differentially Private Optimization on Large Model at Small
Cost", ICML 2023). Here the one backward pass asks autograd for the output gradients G of each Linear layer only, so
it skips every weight-gradient product; Opacus' `compute_linear_norm_sample` turns (A, G) into per-sample norms,
`GradSampleModuleFastGradientClipping.get_clipping_coef` into coefficients, and each layer then does the
weight-gradient work of one ordinary backward: the backward costs what a non-private one does, plus O(batch × widths)
for the norms.

What stays Opacus': `privacy.dp.make_private` calls `PrivacyEngine.make_private(grad_sample_mode="ghost")`, so the
Poisson loader, the `GradSampleModuleFastGradientClipping` wrapper and its clipping coefficient, the
`DPOptimizerFastGradientClipping` (noise of std σ·C on the clipped sum, division by the expected batch size,
accountant step) and the per-sample loss of `DPLossFastGradientClipping` are Opacus' own. Only the capture of (A, G)
and `backward()` are here. Opacus' own per-layer hooks are removed: their forward hooks would store activations that
nothing pops, and their backward hooks would compute the norms a second time.

Scope: every trainable parameter must belong to an `nn.Linear` (exact type, as Opacus' norm samplers match it);
`bookkeeping_blocker(model)` names the first layer that is not, and `privacy.dp.make_private` then falls back to
Opacus' two-pass ghost clipping. A Linear called twice in one forward (shared weights) is refused when it happens.

API
---
- `bookkeeping_blocker(model) -> str | None`: why book-keeping cannot clip `model`, or None.
- `BookkeepingLoss(module, optimizer, criterion, loss_reduction)`: the criterion to train with (a
  `DPLossFastGradientClipping` whose losses' `backward()` sets the clipped summed gradients); `.close()` removes its
  hooks (the model is then as it was, ready for the next round).
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.grad_sample.linear import compute_linear_norm_sample
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping, DPTensorFastGradientClipping
from opacus.utils.module_utils import trainable_modules
from torch import nn
from torch.utils.hooks import RemovableHandle


def bookkeeping_blocker(model: nn.Module) -> str | None:
    """Why book-keeping cannot clip `model` (a trainable layer that is not an `nn.Linear`), or None if it can."""
    for name, layer in trainable_modules(model):
        if type(layer) is not nn.Linear:
            return f"trainable layer {name!r} is a {type(layer).__name__}, not an nn.Linear"
    return None


class BookkeepingLoss(DPLossFastGradientClipping):  # type: ignore[misc]  # Opacus is untyped
    """Opacus' per-sample loss wrapper, whose losses clip and sum the gradients in one backward pass."""

    def __init__(
        self,
        module: GradSampleModuleFastGradientClipping,
        optimizer: DPOptimizerFastGradientClipping,
        criterion: nn.Module,
        loss_reduction: str = "mean",
    ) -> None:
        super().__init__(module, optimizer, criterion, loss_reduction)
        network: nn.Module = module._module
        blocker = bookkeeping_blocker(network)
        if blocker is not None:
            raise NotImplementedError(f"book-keeping clipping needs nn.Linear layers only: {blocker}")
        module.remove_hooks()  # idempotent: Opacus' cleanup() calls it again
        self._names: dict[nn.Linear, str] = {layer: name for name, layer in trainable_modules(network)}
        self._captured: dict[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = [network.register_forward_pre_hook(self._new_forward)]
        self._handles += [layer.register_forward_hook(self._capture) for layer in self._names]

    def __call__(self, *args: Any, **kwargs: Any) -> BookkeepingTensor:
        loss: DPTensorFastGradientClipping = super().__call__(*args, **kwargs)
        return BookkeepingTensor(self, loss)

    def close(self) -> None:
        """Remove the capture hooks and whatever a forward without backward left captured."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured.clear()

    def _new_forward(self, _network: nn.Module, _inputs: Any) -> None:
        # A forward that was not followed by backward (evaluation in train mode) must not leave stale captures.
        self._captured.clear()

    def _capture(self, layer: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not (layer.training and torch.is_grad_enabled()):
            return
        if layer in self._captured:
            raise NotImplementedError(
                f"layer {self._names[layer]!r} ran twice in one forward (shared weights): book-keeping clipping "
                "needs one call per layer; use grad_sample_mode='ghost'"
            )
        self._captured[layer] = (inputs[0].detach(), output)

    def clip_and_sum(self, loss_per_sample: torch.Tensor) -> None:
        """Add Σ_i c_i ∇loss_i to each parameter's `.grad`, c_i = min(1, C / (‖∇loss_i‖ + 1e-6)) as in Opacus."""
        captured, self._captured = self._captured, {}
        missing = [name for layer, name in self._names.items() if layer not in captured]
        if missing:
            raise RuntimeError(f"no forward captured for layer(s) {missing}: each Linear must run once per step")
        layers = list(captured)
        # Gradients of the summed loss w.r.t. each layer's output: row i is sample i's own g_i (no 1/n to undo).
        output_grads = torch.autograd.grad(loss_per_sample.sum(), [captured[layer][1] for layer in layers])
        for layer, backprops in zip(layers, output_grads, strict=True):
            for parameter, norms in _linear_norm_sample(layer, captured[layer][0], backprops).items():
                parameter._norm_sample = norms  # type: ignore[attr-defined]  # read by get_clipping_coef
        coefficients = self.module.get_clipping_coef()
        for layer, backprops in zip(layers, output_grads, strict=True):
            activations = captured[layer][0].to(backprops.dtype)
            scaled = backprops * coefficients.view(-1, *([1] * (backprops.dim() - 1)))
            scaled, activations = scaled.flatten(0, -2), activations.flatten(0, -2)
            if layer.weight.requires_grad:
                _accumulate(layer.weight, scaled.T @ activations)
            if layer.bias is not None and layer.bias.requires_grad:
                _accumulate(layer.bias, scaled.sum(0))


def _linear_norm_sample(
    layer: nn.Linear, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[torch.Tensor, torch.Tensor]:
    """Per-sample gradient norms of `layer`'s trainable parameters.

    For (batch, features) inputs ‖g_i a_iᵀ‖ = ‖g_i‖·‖a_i‖, from two row norms; Opacus' `compute_linear_norm_sample`
    computes the same through batched einsums that cost ~10 % of a step here, so it only serves the (batch,
    positions, features) case, where the positions' outer products do not factor.
    """
    if backprops.dim() != 2:
        norms: dict[torch.Tensor, torch.Tensor] = compute_linear_norm_sample(layer, [activations], backprops)
        return norms
    backprop_norms = torch.linalg.vector_norm(backprops, dim=1)
    result = {}
    if layer.weight.requires_grad:
        result[layer.weight] = backprop_norms * torch.linalg.vector_norm(activations.to(backprops.dtype), dim=1)
    if layer.bias is not None and layer.bias.requires_grad:
        result[layer.bias] = backprop_norms
    return result


def _accumulate(parameter: torch.Tensor, gradient: torch.Tensor) -> None:
    """Add to `.grad` as autograd would: `zero_grad` may have left zeros there, an earlier backward its gradient."""
    if parameter.grad is None:
        parameter.grad = gradient
    else:
        parameter.grad += gradient


class BookkeepingTensor:
    """The loss of one batch: reads like Opacus' DP loss tensor, `backward()` clips in one pass.

    Not a `DPTensorFastGradientClipping` subclass on purpose: its arithmetic returns plain Opacus tensors, whose
    two-pass backward would run on a module whose hooks are removed and clip with stale norms. Without arithmetic,
    `loss * 2` fails loudly instead.
    """

    def __init__(self, criterion: BookkeepingLoss, loss: DPTensorFastGradientClipping) -> None:
        self._criterion = criterion
        self._loss = loss

    def item(self) -> float:
        return float(self._loss.item())

    def detach(self) -> torch.Tensor:
        detached: torch.Tensor = self._loss.detach()
        return detached

    def backward(self) -> None:
        self._criterion.clip_and_sum(self._loss.loss_per_sample)
