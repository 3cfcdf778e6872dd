"""Transcoders (ReLU and binary) as SAELens architectures; trained by
:mod:`bae_lens.transcoder_training`.

A transcoder reads one hook and predicts another: here the MLP input of a block
(``blocks.L.ln2.hook_normalized``) and that MLP's output (``blocks.L.hook_mlp_out``).
SAELens 6.54 loads and splices transcoders (architecture ``"transcoder"``, output hook in
``metadata.hook_name_out``) but cannot train them; this module adds that:

- Model: :class:`TranscoderTraining`, a SAELens ``TrainingSAE`` whose
  ``training_forward_pass`` splits the pair, encodes x and scores the decoding against y.

      z = x W_enc + b_enc;   code = relu(z)  or  step(z) in {0, 1} (BAE estimator)
      y^ = code W_dec + b_dec
      L = sum_d (y^ - y)_d^2 averaged over tokens
        + l1_coefficient * sum_j code_j ||W_dec,j||                       (relu)
        + entropy_coefficient * H(code) + covariance_coefficient * D(code)  (binary)

  with H and D the BAE's entropy and dependence penalties (:mod:`bae_lens.penalties`).
- Training: SAELens's ``SAETrainer`` (Adam, schedules, gradient clipping); a non-finite
  loss stops it before the update, naming the step, with the BAE's check
  (:func:`bae_lens.train_step.raise_if_loss_not_finite`).
- Saving: SAELens's format, architecture ``"transcoder"`` (ReLU) or ``"bae_transcoder"``
  (binary; registered with SAELens by :func:`register_transcoders`), so
  ``SAE.load_from_disk`` and :func:`bae_lens.evaluate.evaluate_sae` take either.

Activations are not normalised (``normalize_activations="none"``): one scale estimated
on the concatenated pair would mix the two hooks' norms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from sae_lens.registry import SAE_CLASS_REGISTRY
from sae_lens.saes.sae import (
    SAEMetadata,
    TrainCoefficientConfig,
    TrainingSAE,
    TrainingSAEConfig,
    TrainStepInput,
    TrainStepOutput,
)
from sae_lens.saes.transcoder import Transcoder, TranscoderConfig
from torch import Tensor, nn
from typing_extensions import override

from bae_lens.binarize import ESTIMATORS, binarize, step_code
from bae_lens.penalties import DEPENDENCE_PENALTIES, dependence_penalty, entropy_loss
from bae_lens.train_step import raise_if_loss_not_finite

logger = logging.getLogger(__name__)

BINARY_TRANSCODER = "bae_transcoder"
CodeKind = Literal["relu", "binary"]


@dataclass
class BinaryTranscoderConfig(TranscoderConfig):
    """Inference config of a binary transcoder (SAELens ``TranscoderConfig`` + a 0/1 code)."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return BINARY_TRANSCODER


class BinaryTranscoder(Transcoder):
    """A transcoder whose code is ``step(x W_enc + b_enc)`` in {0, 1}."""

    @override
    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        hidden_pre = self.hook_sae_acts_pre(self.process_sae_in(x) @ self.W_enc + self.b_enc)
        return self.hook_sae_acts_post(step_code(hidden_pre))

    @torch.no_grad()
    def encode_bits(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """The 0/1 code (what :mod:`bae_lens.evaluate` reports firing statistics of)."""
        return self.encode(x)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> BinaryTranscoder:
        return cls(BinaryTranscoderConfig.from_dict(config_dict))


def register_transcoders() -> None:
    """Register ``"bae_transcoder"`` with SAELens (for ``SAE.load_from_disk``); idempotent."""
    SAE_CLASS_REGISTRY.setdefault(BINARY_TRANSCODER, (BinaryTranscoder, BinaryTranscoderConfig))


register_transcoders()


@dataclass(kw_only=True)
class TranscoderTrainingConfig(TrainingSAEConfig):
    """Training configuration of a transcoder (ReLU or binary code)."""

    d_out: int
    """Output dimension (the target hook's width)."""
    code: CodeKind = "relu"
    """"relu": SAELens's standard transcoder; "binary": a BAE-style 0/1 code."""
    l1_coefficient: float = 5.0
    """relu: weight of the decoder-norm-weighted L1 penalty."""
    l1_warm_up_steps: int = 0
    """relu: linear ramp of the L1 coefficient."""
    estimator: str = "sigmoid"
    """binary: straight-through estimator of the step (see bae_lens.binarize)."""
    estimator_temperature: float = 1.0
    """binary: temperature of the sigmoid estimator."""
    entropy_coefficient: float = 0.05
    """binary: weight of the entropy loss (bits per code bit)."""
    covariance_coefficient: float = 10.0
    """binary: weight of the dependence penalty (per off-diagonal pair)."""
    covariance_penalty: str = "frobenius"
    """binary: "frobenius" or "abs" (see bae_lens.penalties)."""
    init_firing_rate: float = 0.05
    """binary: on the first batch, set b_enc so each bit fires on this fraction of tokens
    and b_dec to the mean target."""
    log_every: int = 10
    """Record losses in ``training_log`` every this many steps."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return "transcoder_training"

    @override
    def get_inference_config_class(self) -> type[TranscoderConfig]:
        return TranscoderConfig if self.code == "relu" else BinaryTranscoderConfig

    def __post_init__(self) -> None:
        self.apply_b_dec_to_input = False  # b_dec lives in the output space
        super().__post_init__()
        if self.code not in get_args(CodeKind):
            raise ValueError(f"code={self.code!r} is not one of {list(get_args(CodeKind))}")
        if self.estimator not in ESTIMATORS or self.estimator == "square_wave":
            raise ValueError(
                f"estimator={self.estimator!r} is not one of "
                f"{[e for e in ESTIMATORS if e != 'square_wave']}"
            )
        if self.covariance_penalty not in DEPENDENCE_PENALTIES:
            raise ValueError(
                f"covariance_penalty={self.covariance_penalty!r} is not one of "
                f"{list(DEPENDENCE_PENALTIES)}"
            )
        if self.normalize_activations != "none":
            raise ValueError(
                f"normalize_activations={self.normalize_activations!r}: transcoders here "
                "support only 'none'"
            )
        for name in ("d_in", "d_sae", "d_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
        if not 0.0 < self.init_firing_rate < 1.0:
            raise ValueError(f"init_firing_rate={self.init_firing_rate!r} must be in (0, 1)")


class TranscoderTraining(TrainingSAE[TranscoderTrainingConfig]):
    """Trains on ``[x, y]`` rows (``d_in + d_out`` wide); see the module docstring."""

    W_enc: nn.Parameter
    b_enc: nn.Parameter

    def __init__(self, cfg: TranscoderTrainingConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.training_log: list[dict[str, float]] = []
        self._needs_data_init = cfg.code == "binary"

    @override
    def initialize_weights(self) -> None:
        d_in, d_sae, d_out = self.cfg.d_in, self.cfg.d_sae, self.cfg.d_out
        kw: dict[str, Any] = {"dtype": self.dtype, "device": self.device}
        w_dec = nn.init.kaiming_uniform_(torch.empty(d_sae, d_out, **kw))
        if self.cfg.decoder_init_norm is not None:
            w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True) * self.cfg.decoder_init_norm
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(nn.init.kaiming_uniform_(torch.empty(d_in, d_sae, **kw)))
        self.b_enc = nn.Parameter(torch.zeros(d_sae, **kw))
        self.b_dec = nn.Parameter(torch.zeros(d_out, **kw))

    @override
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        if self.cfg.code == "relu":
            return {
                "l1": TrainCoefficientConfig(self.cfg.l1_coefficient, self.cfg.l1_warm_up_steps)
            }
        return {
            "entropy": self.cfg.entropy_coefficient,
            "covariance": self.cfg.covariance_coefficient,
        }

    def split(
        self, pair: Float[Tensor, "n d_pair"]
    ) -> tuple[Float[Tensor, "n d_in"], Float[Tensor, "n d_out"]]:
        """``[n, d_in + d_out]`` -> (x ``[n, d_in]``, y ``[n, d_out]``)."""
        if pair.shape[-1] != self.cfg.d_in + self.cfg.d_out:
            raise ValueError(
                f"training input of shape {tuple(pair.shape)}: last dimension must be "
                f"d_in + d_out = {self.cfg.d_in} + {self.cfg.d_out}"
            )
        return pair[..., : self.cfg.d_in], pair[..., self.cfg.d_in :]

    @override
    def encode_with_hidden_pre(
        self, x: Float[Tensor, "... d_in"]
    ) -> tuple[Float[Tensor, "... d_sae"], Float[Tensor, "... d_sae"]]:
        hidden_pre = self.hook_sae_acts_pre(x.to(self.dtype) @ self.W_enc + self.b_enc)
        if self.cfg.code == "relu":
            return self.hook_sae_acts_post(torch.relu(hidden_pre)), hidden_pre
        bits = binarize(hidden_pre, self.cfg.estimator, self.cfg.estimator_temperature)
        return self.hook_sae_acts_post(bits), hidden_pre

    @override
    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_out"]:
        return self.hook_sae_recons(feature_acts @ self.W_dec + self.b_dec)

    @torch.no_grad()
    def initialize_from_batch(
        self, x: Float[Tensor, "n d_in"], y: Float[Tensor, "n d_out"]
    ) -> None:
        """b_dec = mean target; b_enc so that each bit fires on init_firing_rate of rows."""
        z = x.to(self.dtype) @ self.W_enc  # [n, d_sae]
        k = min(max(round((1 - self.cfg.init_firing_rate) * z.shape[0]), 1), z.shape[0])
        self.b_enc.data.copy_(-z.kthvalue(k, dim=0).values)
        self.b_dec.data.copy_(y.to(self.dtype).mean(0))
        self._needs_data_init = False

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x, y = self.split(step_input.sae_in)
        if self._needs_data_init and step_input.n_training_steps == 0:
            self.initialize_from_batch(x, y)
        feature_acts, hidden_pre = self.encode_with_hidden_pre(x)
        y_hat = self.decode(feature_acts)
        losses = {"mse_loss": (y_hat - y.to(y_hat.dtype)).pow(2).sum(-1).mean()}
        c = step_input.coefficients
        if self.cfg.code == "relu":
            weighted = feature_acts * self.W_dec.norm(dim=-1)  # [n, d_sae]
            losses["l1_loss"] = c["l1"] * weighted.sum(-1).mean()
        else:
            zero = hidden_pre.new_zeros(())
            losses["entropy_loss"] = (
                c["entropy"] * entropy_loss(feature_acts, 0.0, "mean") if c["entropy"] > 0 else zero
            )
            losses["covariance_loss"] = (
                c["covariance"] * dependence_penalty(feature_acts, self.cfg.covariance_penalty)
                if c["covariance"] > 0
                else zero
            )
        loss = sum(losses.values(), hidden_pre.new_zeros(()))
        output = TrainStepOutput(
            sae_in=y,
            sae_out=y_hat,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=loss,
            losses=losses,
        )
        raise_if_loss_not_finite(output, step_input.n_training_steps, "transcoder")
        if step_input.n_training_steps % self.cfg.log_every == 0:
            record = {"step": float(step_input.n_training_steps)}
            record |= {name: float(value.detach()) for name, value in losses.items()}
            record["l0"] = float((feature_acts != 0).float().sum(-1).mean())
            self.training_log.append(record)
        return output

    @override
    def calculate_aux_loss(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        raise NotImplementedError("TranscoderTraining computes its losses in training_forward_pass")

    def to_inference(self, metadata: dict[str, Any]) -> Transcoder:
        """The SAELens inference transcoder (``"transcoder"`` or ``"bae_transcoder"``)."""
        cls, cfg_cls = (
            (Transcoder, TranscoderConfig)
            if self.cfg.code == "relu"
            else (BinaryTranscoder, BinaryTranscoderConfig)
        )
        cfg = cfg_cls(
            d_in=self.cfg.d_in,
            d_sae=self.cfg.d_sae,
            d_out=self.cfg.d_out,
            dtype=self.cfg.dtype,
            device=self.cfg.device,
            apply_b_dec_to_input=False,
            normalize_activations="none",
            metadata=SAEMetadata(**metadata),
        )
        sae = cls(cfg)
        sae.load_state_dict({k: v.detach().clone() for k, v in self.state_dict().items()})
        return sae
