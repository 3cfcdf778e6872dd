"""Gradients through a BAE loaded from disk: the straight-through path of the inference
class (``BinaryAutoencoder.encode``), checked as SAELens checks feature gradients of its own
SAEs (a backward hook on ``hook_sae_acts_post`` fires once per backward pass, also with the
error term spliced into ``HookedSAETransformer``), against a naive reference, and with the
forward values unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sae_lens import SAE, HookedSAETransformer
from transformer_lens import HookedTransformerConfig

from bae_lens import BinaryAutoencoder, BinaryAutoencoderConfig
from bae_lens.binarize import bits_to_values, square_wave_code, step_code

HOOK = "blocks.0.hook_resid_post"


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.grads: list[torch.Tensor] = []

    def inc(self, grad: torch.Tensor, hook: object = None) -> None:
        self.count += 1
        self.grads.append(grad.detach().clone())


def _loaded(tmp_path: Path, **cfg: object) -> SAE:
    torch.manual_seed(0)
    sae = BinaryAutoencoder(BinaryAutoencoderConfig(d_in=8, d_sae=16, **cfg))  # type: ignore[arg-type]
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_(std=0.1)
    sae.cfg.metadata.hook_name = HOOK
    sae.save_model(tmp_path / "bae")
    return SAE.load_from_disk(tmp_path / "bae")


@pytest.fixture(scope="module")
def model() -> HookedSAETransformer:
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_vocab=20, act_fn="gelu"
    )
    return HookedSAETransformer(cfg)


@pytest.mark.parametrize("binarization", ["step", "square_wave"])
def test_encode_values_are_the_hard_code_and_gradients_pass_straight(
    tmp_path: Path, binarization: str
) -> None:
    sae = _loaded(tmp_path, binarization=binarization)
    assert isinstance(sae, BinaryAutoencoder)
    x = torch.randn(5, 8, requires_grad=True)
    values = sae.encode(x)
    z = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    code = step_code(z) if binarization == "step" else square_wave_code(z, 2.0)
    assert torch.equal(values, code.detach())  # forward values unchanged, bit for bit
    w = torch.randn(5, 16)
    (values * w).sum().backward()
    assert x.grad is not None and sae.W_enc.grad is not None
    # naive reference: dL/dz = dL/dh (identity), or times the square wave's surrogate
    dz = w if binarization == "step" else w * 2.0 * torch.cos(torch.pi * z.detach())
    torch.testing.assert_close(x.grad, dz @ sae.W_enc.detach().T)
    torch.testing.assert_close(sae.b_enc.grad, dz.sum(0))


def test_more_bits_per_feature_keep_values_and_pass_gradients(tmp_path: Path) -> None:
    sae = _loaded(tmp_path, bits_per_feature=2)
    x = torch.randn(4, 8, requires_grad=True)
    values = sae.encode(x)
    z = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert torch.equal(values, bits_to_values(step_code(z), 2).detach())
    values.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_backward_hook_on_feature_acts_fires_through_hooked_sae_transformer(
    tmp_path: Path, model: HookedSAETransformer
) -> None:
    sae = _loaded(tmp_path)
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    clean = model(tokens)
    model.add_sae(sae, use_error_term=True)
    try:
        counter = Counter()
        logits = model.run_with_hooks(
            tokens, bwd_hooks=[(f"{HOOK}.hook_sae_acts_post", counter.inc)]
        )
        torch.testing.assert_close(logits, clean)  # the error term keeps the logits exact
        logits[0, -1].logsumexp(-1).backward()
        assert counter.count == 1
        grad = counter.grads[0]
        assert grad.shape == (1, 5, 16) and torch.isfinite(grad).all() and grad.abs().sum() > 0
    finally:
        model.reset_saes()


def test_no_gradient_is_built_without_grad(tmp_path: Path) -> None:
    sae = _loaded(tmp_path)
    with torch.no_grad():
        values = sae.encode(torch.randn(3, 8))
    assert not values.requires_grad
