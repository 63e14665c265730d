"""DARTS' architecture step (Liu et al. 2019, Sec. 2.3): first order, and second order unrolled.

The architecture parameters alpha minimise the validation loss of the weights that one training
step would give:

    grad_alpha L_val(w', alpha),   w' = w - xi * grad_w L_train(w, alpha)          (DARTS Eq. 6)

First order drops the dependence of w' on alpha (xi = 0): the gradient of the validation loss
at the current weights. Second order (Eq. 7-8) differentiates through the unrolled step:

    grad_alpha L_val(w', alpha)
      - xi * [grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)] / (2 eps),
    w+- = w +- eps * grad_w' L_val(w', alpha),  eps = 0.01 / ||grad_w' L_val(w', alpha)||

with xi the current weight learning rate, and the unrolled step taken as the weight optimiser
would take it: DARTS' `_compute_unrolled_model` adds the SGD momentum buffer (times momentum)
and the weight decay term to the gradient. (With an Adam weight optimiser the unrolled step is
plain gradient descent with weight decay.) The weights are unrolled in place and restored
exactly from a copy afterwards, instead of DARTS' copy of the whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from msrdsl.search.distributed import Dist

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# DARTS' `r` in `_hessian_vector_product`: eps = r / ||v||.
FINITE_DIFFERENCE_R = 1e-2


class NonFiniteLoss(Exception):
    """A loss that is NaN or infinite; `which` says which loss of the step it was."""

    def __init__(self, which: str, value: float):
        super().__init__(f"{which} is {value}")
        self.which, self.value = which, value


def _finite(value: float, which: str) -> float:
    if value != value or value in (float("inf"), float("-inf")):
        raise NonFiniteLoss(which, value)
    return value


def _grads(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    # An operator can leave a parameter unused (e.g. a zero op); its gradient is then zero.
    return list(torch.autograd.grad(loss, list(params), allow_unused=True, materialize_grads=True))


class Architect:
    """One architecture step per call: on a validation batch (second order: and a train batch)."""

    def __init__(self, weights: Sequence[torch.nn.Parameter], alphas: Sequence[torch.nn.Parameter],
                 optimizer: torch.optim.Optimizer, order: str, dist: Dist):
        if order not in ("first", "second"):
            raise ValueError(f"order must be 'first' or 'second', not {order!r}")
        self.weights, self.alphas = list(weights), list(alphas)
        self.optimizer, self.order, self.dist = optimizer, order, dist

    def step(self, loss_fn: LossFn, train: Batch, valid: Batch, lr: float,
             weight_optimizer: torch.optim.Optimizer) -> float:
        """One update of alpha; returns the validation loss it saw (averaged over ranks)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.order == "first":
            loss = loss_fn(*valid)
            grads = _grads(loss, self.alphas)
            (total,) = self.dist.average_(grads, [loss.item()])
            value = _finite(total / self.dist.world_size,
                            "the validation loss of the architecture step")
        else:
            grads, value = self._second_order(loss_fn, train, valid, lr, weight_optimizer)
        for alpha, g in zip(self.alphas, grads):
            alpha.grad = g
        self.optimizer.step()
        return value

    def _second_order(self, loss_fn: LossFn, train: Batch, valid: Batch, xi: float,
                      weight_optimizer: torch.optim.Optimizer) -> tuple[list[torch.Tensor], float]:
        world = self.dist.world_size
        loss = loss_fn(*train)
        dw = _grads(loss, self.weights)
        (total,) = self.dist.average_(dw, [loss.item()])
        _finite(total / world, "the training loss of the unrolled step")

        saved = [w.detach().clone() for w in self.weights]
        momentum, decay = _sgd_terms(weight_optimizer)
        try:
            with torch.no_grad():
                for w, g in zip(self.weights, dw):
                    step = g + decay * w if decay else g.clone()
                    buf = weight_optimizer.state.get(w, {}).get("momentum_buffer")
                    if momentum and buf is not None:
                        step.add_(buf, alpha=momentum)
                    w.sub_(step, alpha=xi)  # w' = w - xi * (momentum * buf + g + wd * w)

            loss = loss_fn(*valid)
            grads = _grads(loss, self.alphas + self.weights)
            (total,) = self.dist.average_(grads, [loss.item()])
            value = _finite(total / world, "the validation loss of the architecture step")
            dalpha, v = grads[:len(self.alphas)], grads[len(self.alphas):]

            norm = torch.cat([g.reshape(-1) for g in v]).norm()
            eps = FINITE_DIFFERENCE_R / norm
            plus = self._train_alpha_grads(loss_fn, train, saved, v, eps, "w+")
            minus = self._train_alpha_grads(loss_fn, train, saved, v, -eps, "w-")
        finally:
            with torch.no_grad():
                for w, s in zip(self.weights, saved):
                    w.copy_(s)
        return [da - xi * (p - m) / (2 * eps) for da, p, m in zip(dalpha, plus, minus)], value

    def _train_alpha_grads(self, loss_fn: LossFn, train: Batch, saved: list[torch.Tensor],
                           v: list[torch.Tensor], eps: torch.Tensor, where: str
                           ) -> list[torch.Tensor]:
        """grad_alpha L_train(w + eps * v, alpha), averaged over ranks."""
        with torch.no_grad():
            for w, s, d in zip(self.weights, saved, v):
                w.copy_(s).add_(d * eps)
        loss = loss_fn(*train)
        grads = _grads(loss, self.alphas)
        (total,) = self.dist.average_(grads, [loss.item()])
        _finite(total / self.dist.world_size,
                f"the training loss at {where} of the finite-difference Hessian-vector product")
        return grads


def _sgd_terms(optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    """(momentum, weight decay) the unrolled step copies from the weight optimiser."""
    group = optimizer.param_groups[0]
    momentum = float(group.get("momentum", 0.0)) if isinstance(optimizer, torch.optim.SGD) else 0.0
    return momentum, float(group.get("weight_decay", 0.0))
