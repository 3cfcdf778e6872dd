"""One optimisation step for the training loops bae_lens writes by hand.

SAELens's ``SAETrainer`` trains every SAE that goes through its runner or through
``SAETrainer.fit`` (:mod:`bae_lens.train`, :mod:`bae_lens.frontier`,
:mod:`bae_lens.transcoder_training`). Two loops cannot use it:

- :func:`bae_lens.entropy.train_set_bae` trains on a set held in memory, with held-out
  checks and early stopping between steps;
- :func:`bae_lens.distributed.train_data_parallel` must average gradients over ranks
  between ``backward`` and the gradient clipping, and ``SAETrainer._train_step`` has no
  seam there.

Both call :func:`train_step`, which repeats ``SAETrainer._train_step`` (sae_lens 6.x)
operation for operation: ``sae.train()``; ``training_forward_pass`` with the scheduled
coefficients and the step number; backward; clipping to norm 1; Adam step; ``zero_grad``;
then the learning-rate and coefficient schedulers step. :class:`TrainingState` builds
Adam and the schedulers as ``SAETrainer.__init__`` does. Seeded, the two give the same
weights (tests/test_train_step.py).

What it adds: the non-finite loss check (:func:`raise_if_loss_not_finite`, the one the
BAE and the transcoder also run inside their forward passes) before backward, and the
``reduce_gradients`` hook after it.

What it leaves out, on purpose:

- dead-feature tracking (``n_forward_passes_since_fired``, ``act_freq_scores``): the step
  passes ``dead_neuron_mask=None``. The BAE's and the transcoder's losses never read the
  mask, and the BAE tracks its own firing rates (``recent_firing_rates``,
  ``training_log``). TopK and BatchTopK auxiliary losses need it; those train through
  SAETrainer. So no ``cfg.metadata.l0`` / ``num_dead_features`` at the end either.
- ``is_logging_step``: always False (SAETrainer sets it only for wandb); the BAE still
  records its ``training_log`` every ``log_every`` steps.
- autocast (``SAETrainerConfig.autocast``, off by default), the activation scaler,
  checkpoints, wandb and evals: they belong to the loop, not the step. ``train_set_bae``
  scales the set itself and folds the scale in; the data-parallel loop refuses the
  normalisations that need the scaler.

SAETrainer has no other per-step hook: in sae_lens 6.x there is no decoder-norm
renormalisation or ``on_step`` call outside ``training_forward_pass``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from sae_lens.saes.sae import (
    TrainCoefficientConfig,
    TrainingSAE,
    TrainStepInput,
    TrainStepOutput,
)
from sae_lens.training.optim import CoefficientScheduler, get_lr_scheduler
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler

SAELENS_MAX_GRAD_NORM = 1.0
"""The gradient-norm clip of ``SAETrainer._train_step`` (a constant there, not a config
field)."""


def raise_if_loss_not_finite(output: TrainStepOutput, step: int, what: str) -> None:
    """Raise FloatingPointError naming ``what``, the step and every loss term when the
    loss is NaN or inf, so training stops before the step's update: no weight turns NaN
    and nothing is saved over the last checkpoint.

    >>> out = TrainStepOutput(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1),
    ...                       torch.tensor(float("nan")), {"mse_loss": torch.tensor(float("nan"))})
    >>> raise_if_loss_not_finite(out, 7, "BAE")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FloatingPointError: BAE training step 7: the loss is not finite (mse_loss nan); ...
    """
    if bool(torch.isfinite(output.loss.detach())):
        return
    parts = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in output.losses.items())
    raise FloatingPointError(
        f"{what} training step {step}: the loss is not finite ({parts}); stopped before "
        "this step's update, so no weight is NaN and nothing is saved over the last "
        "checkpoint. Lower the learning rate or the coefficients, or check the activations."
    )


@dataclass
class TrainingState:
    """Adam, its learning-rate schedule, the coefficient warm-ups and the number of steps
    taken: what ``SAETrainer`` keeps between steps (and saves as its trainer state)."""

    optimizer: torch.optim.Optimizer
    lr_scheduler: LRScheduler
    coefficient_schedulers: dict[str, CoefficientScheduler]
    step: int = 0
    """Steps taken; the next step's ``n_training_steps``."""

    @classmethod
    def for_sae(
        cls,
        sae: TrainingSAE,
        *,
        lr: float,
        n_steps: int,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        lr_scheduler_name: str = "constant",
        lr_warm_up_steps: int = 0,
        lr_decay_steps: int = 0,
        lr_end: float | None = None,
        n_restart_cycles: int = 1,
    ) -> TrainingState:
        """Built as ``SAETrainer.__init__`` builds them, for ``n_steps`` steps; ``lr_end``
        defaults to lr / 10 as in ``SAETrainerConfig``. Coefficients come from
        ``sae.get_coefficients()``, so their warm-ups (``entropy_warm_up_steps``, ...) and
        every priced term (``l0_coefficient``) apply."""
        optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=adam_betas)
        lr_scheduler = get_lr_scheduler(
            lr_scheduler_name,
            optimizer=optimizer,
            training_steps=n_steps,
            lr=lr,
            warm_up_steps=lr_warm_up_steps,
            decay_steps=lr_decay_steps,
            lr_end=lr / 10 if lr_end is None else lr_end,
            num_cycles=n_restart_cycles,
        )
        schedulers = {}
        for name, value in sae.get_coefficients().items():
            if not isinstance(value, TrainCoefficientConfig):
                value = TrainCoefficientConfig(value=value, warm_up_steps=0)
            schedulers[name] = CoefficientScheduler(value.warm_up_steps, value.value)
        return cls(optimizer, lr_scheduler, schedulers)

    def coefficients(self) -> dict[str, float]:
        """This step's coefficient values (``SAETrainer.get_coefficients``)."""
        return {name: s.value for name, s in self.coefficient_schedulers.items()}


def train_step(
    sae: TrainingSAE,
    sae_in: Float[Tensor, "batch d_in"],
    state: TrainingState,
    *,
    reduce_gradients: Callable[[torch.nn.Module], None] | None = None,
    max_grad_norm: float = SAELENS_MAX_GRAD_NORM,
) -> TrainStepOutput:
    """One step of ``sae`` on ``sae_in``, as ``SAETrainer._train_step`` (module docstring):
    forward, non-finite check, backward, ``reduce_gradients(sae)`` (the data-parallel
    gradient average), clip to ``max_grad_norm``, Adam step, ``zero_grad``, schedulers
    step, ``state.step += 1``. A non-finite loss raises FloatingPointError before
    backward, leaving the weights, Adam and the schedulers as they were."""
    sae.train()
    output = sae.training_forward_pass(
        TrainStepInput(
            sae_in=sae_in,
            coefficients=state.coefficients(),
            dead_neuron_mask=None,
            n_training_steps=state.step,
            is_logging_step=False,
        )
    )
    raise_if_loss_not_finite(output, state.step, type(sae).__name__)
    output.loss.backward()
    if reduce_gradients is not None:
        reduce_gradients(sae)
    torch.nn.utils.clip_grad_norm_(sae.parameters(), max_grad_norm)
    state.optimizer.step()
    state.optimizer.zero_grad()
    state.lr_scheduler.step()
    for scheduler in state.coefficient_schedulers.values():
        scheduler.step()
    state.step += 1
    return output
