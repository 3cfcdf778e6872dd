"""The shared training step (bae_lens.train_step): SAETrainer's step op for op, used by
both hand-written loops, clipping, the non-finite stop and the gradient-reduction hook."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer

import bae_lens.distributed
import bae_lens.entropy
from bae_lens import train_step as train_step_module
from bae_lens.bae import BinaryAutoencoderTraining, BinaryAutoencoderTrainingConfig
from bae_lens.distributed import iterate_batches, train_data_parallel
from bae_lens.entropy import train_set_bae
from bae_lens.train_step import SAELENS_MAX_GRAD_NORM, TrainingState, train_step
from bae_lens.transcoders import TranscoderTraining, TranscoderTrainingConfig

D_IN, D_SAE = 6, 12


def _bae(seed: int = 0, **cfg: Any) -> BinaryAutoencoderTraining:
    torch.manual_seed(seed)
    options = dict(entropy_coefficient=0.1, covariance_coefficient=1.0) | cfg
    return BinaryAutoencoderTraining(
        BinaryAutoencoderTrainingConfig(d_in=D_IN, d_sae=D_SAE, **options)
    )


def _batches(n: int, rows: int = 32, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(D_IN, D_IN, generator=g)
    return [scale * torch.randn(rows, D_IN, generator=g) @ mix for _ in range(n)]


def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def test_the_step_is_saetrainers_step_op_for_op() -> None:
    """Seeded, with coefficient warm-ups, an lr warm-up and a cosine schedule: the same
    weights, losses and coefficient values as SAETrainer.step, step by step."""
    options = dict(entropy_warm_up_steps=3, covariance_warm_up_steps=2, l0_coefficient=0.05)
    ours, theirs = _bae(**options), _bae(**options)
    batches = _batches(8)
    trainer = SAETrainer(
        cfg=SAETrainerConfig(
            total_training_samples=8 * 32, train_batch_size_samples=32, lr=3e-3, lr_end=3e-3 / 10,
            lr_scheduler_name="cosineannealing", lr_warm_up_steps=2,
        ),
        sae=theirs,
        data_provider=iter(batches),
    )  # fmt: skip
    state = TrainingState.for_sae(
        ours, lr=3e-3, n_steps=8, lr_scheduler_name="cosineannealing", lr_warm_up_steps=2
    )
    for step, batch in enumerate(batches):
        assert state.coefficients() == trainer.get_coefficients()
        torch.manual_seed(step)  # the same random probes of the dependence penalty
        mine = train_step(ours, batch, state)
        torch.manual_seed(step)
        reference = trainer.step(batch)
        trainer.n_training_steps += 1
        assert set(mine.losses) == set(reference.losses) >= {"entropy_loss", "l0_loss"}
        for name, value in reference.losses.items():
            assert torch.equal(mine.losses[name].detach(), value.detach()), name
        assert state.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]
    assert state.step == trainer.n_training_steps == 8
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_both_hand_written_loops_take_the_shared_step(monkeypatch) -> None:
    calls: list[str] = []

    def spy(module: str):
        def wrapped(sae, sae_in, state, **kwargs):
            calls.append(module)
            return train_step(sae, sae_in, state, **kwargs)

        return wrapped

    monkeypatch.setattr(bae_lens.entropy, "train_step", spy("entropy"))
    monkeypatch.setattr(bae_lens.distributed, "train_step", spy("distributed"))
    train_set_bae(torch.cat(_batches(4)), D_SAE, steps=3, batch_size=32, check_every=2)
    assert calls == ["entropy"] * 3
    train_data_parallel(_bae(), iter(_batches(3)), 3)
    assert calls[3:] == ["distributed"] * 3


def test_train_set_bae_applies_the_configs_warm_ups_and_price_per_firing(monkeypatch) -> None:
    """The hand loop used to pass fixed {entropy, covariance} values: a warm-up or an
    l0_coefficient given through ``config`` was silently ignored."""
    seen: list[dict[str, float]] = []
    forward = BinaryAutoencoderTraining.training_forward_pass

    def record(self, step_input):
        seen.append(dict(step_input.coefficients))
        return forward(self, step_input)

    monkeypatch.setattr(BinaryAutoencoderTraining, "training_forward_pass", record)
    train_set_bae(torch.cat(_batches(4)), D_SAE, steps=4, batch_size=32, check_every=2,
                  entropy_coefficient=0.2, entropy_warm_up_steps=4, l0_coefficient=0.1)  # fmt: skip
    assert [c["entropy"] for c in seen] == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert all(c["l0"] == 0.1 and c["covariance"] == 30.0 for c in seen)


@pytest.mark.parametrize("max_grad_norm", [SAELENS_MAX_GRAD_NORM, 0.25])
def test_gradients_are_clipped_before_the_update(max_grad_norm: float) -> None:
    sae = _bae()
    state = TrainingState.for_sae(sae, lr=1e-3, n_steps=2)
    before_clip: list[float] = []
    at_update: list[float] = []
    state.optimizer.register_step_pre_hook(lambda *_: at_update.append(_grad_norm(sae)))
    batch = _batches(1, scale=100.0)[0]  # squared error ~1e4 per row: a huge gradient
    train_step(sae, batch, state, max_grad_norm=max_grad_norm,
               reduce_gradients=lambda m: before_clip.append(_grad_norm(m)))  # fmt: skip
    assert before_clip[0] > 100 * max_grad_norm
    assert at_update[0] == pytest.approx(max_grad_norm, rel=1e-4)
    assert all(p.grad is None or not p.grad.any() for p in sae.parameters())  # zero_grad


def test_the_reduction_hook_runs_between_backward_and_the_update() -> None:
    """A hook that zeroes every gradient leaves Adam's first step at exactly zero."""
    sae = _bae()
    state = TrainingState.for_sae(sae, lr=1e-2, n_steps=1)
    batch = _batches(1)[0]
    sae.initialize_from_batch(batch)  # the data-dependent start is not an update
    start = {k: v.clone() for k, v in sae.state_dict().items()}
    seen: list[torch.nn.Module] = []

    def zero(module: torch.nn.Module) -> None:
        seen.append(module)
        assert all(p.grad is not None for p in module.parameters())  # after backward
        for p in module.parameters():
            p.grad.zero_()  # type: ignore[union-attr]

    train_step(sae, batch, state, reduce_gradients=zero)
    assert seen == [sae] and state.step == 1
    for name, value in sae.state_dict().items():
        assert torch.equal(value, start[name]), name


def test_the_data_parallel_loop_hands_its_gradient_average_to_the_step(monkeypatch) -> None:
    reduced: list[torch.nn.Module] = []
    monkeypatch.setattr(bae_lens.distributed, "average_gradients", reduced.append)
    sae = _bae()
    train_data_parallel(sae, iterate_batches(torch.cat(_batches(4)), 32, 5), 5)
    assert reduced == [sae] * 5


def _standard_sae() -> StandardTrainingSAE:
    torch.manual_seed(0)
    return StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE))


def _transcoder() -> TranscoderTraining:
    torch.manual_seed(0)
    return TranscoderTraining(
        TranscoderTrainingConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_IN, code="binary")
    )


@pytest.mark.parametrize(
    "make, what",
    [(_standard_sae, "StandardTrainingSAE"), (_transcoder, "transcoder"), (_bae, "BAE")],
)
def test_a_non_finite_loss_stops_before_the_update(make, what: str) -> None:
    sae = make()
    state = TrainingState.for_sae(sae, lr=1e-2, n_steps=4)
    good = _batches(1)[0]
    width = D_IN * 2 if isinstance(sae, TranscoderTraining) else D_IN
    train_step(sae, torch.cat([good] * (width // D_IN), dim=-1), state)
    weights = {k: v.clone() for k, v in sae.state_dict().items()}
    adam = {k: v.clone() for k, v in state.optimizer.state[sae.W_enc].items()}
    lr = state.optimizer.param_groups[0]["lr"]
    bad = torch.cat([good] * (width // D_IN), dim=-1)
    if isinstance(sae, BinaryAutoencoderTraining):
        with torch.no_grad():
            sae.W_dec[0, 0] = float("inf")  # the BAE refuses non-finite input itself
        weights["W_dec"] = sae.W_dec.detach().clone()
    else:
        bad[0, -1] = float("nan")
    with pytest.raises(FloatingPointError, match=f"^{what} training step 1: the loss is not"):
        train_step(sae, bad, state)
    assert state.step == 1 and state.optimizer.param_groups[0]["lr"] == lr
    for name, value in sae.state_dict().items():
        assert torch.equal(value, weights[name]), name
    for name, value in state.optimizer.state[sae.W_enc].items():
        assert torch.equal(value, adam[name]), name
    assert all(p.grad is None or not p.grad.any() for p in sae.parameters())


def test_module_doctest() -> None:
    assert doctest.testmod(train_step_module).failed == 0
