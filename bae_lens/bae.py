"""The Binary Autoencoder as a SAELens architecture (``architecture = "bae"``).

    z  = (x - b_dec) W_enc + b_enc           # [.., d_sae * k] pre-activations
    h  = step(z) in {0, 1}                   # 1-bit code (or square wave), STE backward
    v  = bits_to_values(h, k)                # [.., d_sae], = h when k = 1
    x^ = out_act(v W_dec + b_dec)

(arXiv 2509.20997 section 3; ../shared/BAE_METHOD.md sections 1-2.) ``hook_sae_acts_pre``
sees ``z``, ``hook_sae_acts_post`` sees ``v`` (the values the decoder reads, so that
``forward(x) == decode(encode(x))`` as for every SAELens SAE); :meth:`encode_bits` gives the
raw bits.

Training loss per minibatch (SAELens's convention for the reconstruction term):

    L = sum_d (x^ - x)_d^2 averaged over tokens                       "mse_loss"
      + entropy_coefficient * H_thr(h)        (after entropy_start_step) "entropy_loss"
      + covariance_coefficient * D(h)                                   "covariance_loss"

Importing :mod:`bae_lens` registers both classes with SAELens.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from einops import rearrange
from jaxtyping import Float
from sae_lens.registry import SAE_CLASS_REGISTRY, SAE_TRAINING_CLASS_REGISTRY
from sae_lens.saes.sae import (
    SAE,
    SAEConfig,
    TrainCoefficientConfig,
    TrainingSAE,
    TrainingSAEConfig,
    TrainStepInput,
    TrainStepOutput,
)
from torch import Tensor, nn
from typing_extensions import override

from bae_lens.binarize import (
    ESTIMATORS,
    binarize,
    bit_weights,
    bits_to_values,
    square_wave_code,
    step_code,
)
from bae_lens.collectives import gather_rows, global_firing_rates
from bae_lens.penalties import (
    DEPENDENCE_PENALTIES,
    REDUCTIONS,
    code_stats_from_rates,
    dependence_penalty,
    entropy_loss,
    firing_rates,
)
from bae_lens.runtime import HALF_DTYPES
from bae_lens.train_step import raise_if_loss_not_finite

logger = logging.getLogger(__name__)

ARCHITECTURE = "bae"
Binarization = Literal["step", "square_wave"]
ACTIVATION_VIEWS: tuple[str, ...] = ("code", "margin", "burst")
"""What an inference BAE's ``encode`` can return (:meth:`BinaryAutoencoder.set_activation_view`)."""
OutputActivation = Literal["identity", "relu", "tanh", "sigmoid"]
_OUTPUT_ACTIVATIONS: dict[str, Any] = {
    "identity": lambda x: x,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def _check_choice(field: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not one of {list(allowed)}")


def _check_number(field: str, value: float, low: float, strict: bool = False) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{field}={value!r} must be a finite number")
    ok = value > low if strict else value >= low
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        raise ValueError(f"{field}={value!r} must be {bound}")


class FoldNotSupportedError(NotImplementedError, ValueError):
    """A fold that this architecture cannot do without changing its outputs."""


@dataclass
class BinaryAutoencoderConfig(SAEConfig):
    """Inference configuration of a BAE (what ``cfg.json`` holds beside SAELens's fields)."""

    bits_per_feature: int = 1
    """k: bits per decoded feature. The encoder emits d_sae * k bits; each run of k bits
    decodes to sum_i 2^i b_i / (2^k - 1). 1 is the paper's 1-bit code."""
    binarization: Binarization = "step"
    """"step": h = 1[z > 0]. "square_wave": h = 1[(z mod square_wave_period) < period/2]."""
    square_wave_period: float = 2.0
    """Period c of the square-wave binarization."""
    output_activation: OutputActivation = "identity"
    """Applied to the decoder output (the released code's output_activation)."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    def __post_init__(self) -> None:
        super().__post_init__()
        _validate_inference_fields(self)


def _validate_inference_fields(cfg: Any) -> None:
    for field in ("d_in", "d_sae", "bits_per_feature"):
        value = getattr(cfg, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{field}={value!r} must be an integer >= 1")
    _check_choice("binarization", cfg.binarization, get_args(Binarization))
    _check_choice("output_activation", cfg.output_activation, get_args(OutputActivation))
    _check_number("square_wave_period", cfg.square_wave_period, 0.0, strict=True)
    if cfg.reshape_activations != "none":
        raise ValueError(
            f"reshape_activations={cfg.reshape_activations!r}: bae_lens supports only 'none'"
        )


class _BinaryEncoding:
    """Encoder/decoder maths shared by the inference and training classes."""

    cfg: Any
    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    @property
    def n_bits(self) -> int:
        """Width of the code: d_sae * bits_per_feature."""
        return self.cfg.d_sae * self.cfg.bits_per_feature

    def _init_binary_weights(self: Any) -> None:
        super().initialize_weights()  # type: ignore[misc]  # W_dec, b_dec (and a W_enc we replace)
        k = self.cfg.bits_per_feature
        # Each of a feature's k bits starts reading the feature's own decoder direction.
        w_enc = self.W_dec.data.T.repeat_interleave(k, dim=1).contiguous()  # [d_in, d_sae*k]
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(self.n_bits, dtype=self.dtype, device=self.device))

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(
                f"input must be a torch.Tensor of shape [..., d_in={self.cfg.d_in}], "
                f"got {type(x).__name__}"
            )
        if x.is_complex():
            raise ValueError(f"input has complex dtype {x.dtype}: a real dtype is required")
        if not x.is_floating_point():
            raise ValueError(
                f"input has dtype {x.dtype}: activations must be floating point "
                "(integer inputs are usually token ids passed by mistake)"
            )
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: last dimension must be d_in={self.cfg.d_in}"
            )
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"input of shape {tuple(x.shape)} has {bad} non-finite values (NaN or inf)"
            )

    def hidden_pre(self: Any, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_bits"]:
        """Pre-activations z = process(x) @ W_enc + b_enc (after hook_sae_acts_pre); float32
        for a half-precision BAE (see :meth:`_encoder_product`)."""
        self._check_input(x)
        product = self._encoder_product(self.process_sae_in(x))
        return self.hook_sae_acts_pre(product + self.b_enc.to(product.dtype))

    def _encoder_product(self: Any, sae_in: Tensor) -> Float[Tensor, "... n_bits"]:
        """sae_in @ W_enc, in float32 when the BAE's weights are bfloat16/float16 or autocast
        is on. The code is a threshold on z (z > 0, or the square wave's sign), so the
        decision is taken on a float32 z: a half-precision product, rounded before b_enc is
        added, flips the bits whose z is near a threshold (measured in the README, "Coming
        from SAELens"). The weights and the input keep their half-precision rounding; the
        values go back to the BAE's dtype after the code (0/1 is exact in every dtype)."""
        half = self.W_enc.dtype in HALF_DTYPES or torch.is_autocast_enabled(sae_in.device.type)
        if not half:
            return sae_in @ self.W_enc
        with torch.autocast(sae_in.device.type, enabled=False):
            return sae_in.float() @ self.W_enc.float()

    def code(self, z: Float[Tensor, "... n_bits"]) -> Float[Tensor, "... n_bits"]:
        """The binary code of pre-activations z, without gradient estimator."""
        if self.cfg.binarization == "square_wave":
            return square_wave_code(z, self.cfg.square_wave_period)
        return step_code(z)

    @torch.no_grad()
    def encode_bits(self: Any, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_bits"]:
        """The raw 0/1 code (d_sae * bits_per_feature bits) of x, in the BAE's dtype."""
        return self.code(self.hidden_pre(x)).to(self.dtype)

    def decode(self: Any, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        out = feature_acts @ self.W_dec + self.b_dec
        out = _OUTPUT_ACTIVATIONS[self.cfg.output_activation](out)
        out = self.hook_sae_recons(out)
        out = self.run_time_activation_norm_fn_out(out)
        return self.reshape_fn_out(out, self.d_head)

    @torch.no_grad()
    def flip_bits_(self, mask: Tensor) -> int:
        """Replace every bit b selected by ``mask`` [n_bits] with 1 - b, keeping every
        reconstruction: a flipped bit's encoder row and bias change sign (square wave: its
        bias moves by half a period), its decoder row changes sign and is added to b_dec
        (and, when b_dec is subtracted from the input, the encoder biases absorb that).
        Entropy and |covariance| are unchanged by a flip; the L0 of a bit firing on a
        fraction p of tokens becomes 1 - p. Returns the number of bits flipped. Only for
        1-bit features (a flipped bit of a k-bit value is not a linear change of it)."""
        if self.cfg.bits_per_feature != 1:
            raise ValueError(
                f"bits_per_feature={self.cfg.bits_per_feature}: bits can be flipped only "
                "when each feature is one bit"
            )
        mask = torch.as_tensor(mask, device=self.W_enc.device).to(torch.bool)
        if mask.shape != (self.n_bits,):
            raise ValueError(f"mask of shape {tuple(mask.shape)}: expected ({self.n_bits},)")
        n = int(mask.sum())
        if n == 0:
            return 0
        m = mask.to(self.W_enc.dtype)
        if self.cfg.binarization == "square_wave":
            self.b_enc.data += m * (self.cfg.square_wave_period / 2)
        else:
            sign = 1 - 2 * m
            self.W_enc.data *= sign
            self.b_enc.data *= sign
        shift = m @ self.W_dec.data  # [d_in]: the flipped bits' decoder rows, summed
        self.W_dec.data[mask] *= -1
        self.b_dec.data += shift
        if self.cfg.apply_b_dec_to_input:
            self.b_enc.data += shift @ self.W_enc.data
        return n

    def fold_W_dec_norm(self) -> None:
        """Refused: a 0/1 code cannot absorb a scale, so folding would change outputs.

        Raises :class:`FoldNotSupportedError`, a NotImplementedError (what SAELens raises for
        a fold an architecture cannot do, and what SAEBench's loader catches) that is also a
        ValueError (what earlier bae_lens callers caught)."""
        raise FoldNotSupportedError(
            "fold_W_dec_norm is not supported for the 'bae' architecture: its code is 0/1, "
            "so scaling decoder rows cannot be compensated in the encoder and would change "
            "every reconstruction. Load with fold_W_dec_norm=False."
        )

    def fold_activation_norm_scaling_factor(self: Any, scaling_factor: float) -> None:
        """SAELens's fold (W_enc *= s, W_dec and b_dec /= s); refused where out_act(y / s)
        != out_act(y) / s, since the folded BAE would then change every reconstruction."""
        if self.cfg.output_activation not in ("identity", "relu"):
            raise ValueError(
                f"output_activation={self.cfg.output_activation!r}: folding an activation "
                "scaling factor keeps outputs only for 'identity' or 'relu'"
            )
        super().fold_activation_norm_scaling_factor(scaling_factor)  # type: ignore[misc]

    def fold_activation_whitening(self: Any, *args: Any, **kwargs: Any) -> None:
        """SAELens's affine whitening fold; exact only when the output activation is linear."""
        if self.cfg.output_activation != "identity":
            raise ValueError(
                f"output_activation={self.cfg.output_activation!r}: folding a whitening "
                "keeps outputs only for 'identity'"
            )
        super().fold_activation_whitening(*args, **kwargs)  # type: ignore[misc]


class BinaryAutoencoder(_BinaryEncoding, SAE[BinaryAutoencoderConfig]):
    """Inference BAE: ``encode`` gives the decoder's input values (0/1 when k = 1).

    Gradients pass through the code straight: ``encode``'s values are exactly the hard
    code, and its backward pass uses the identity, dL/dz = dL/dh (for the square wave, the
    derivative of its first Fourier term, as in training; :mod:`bae_lens.binarize`). So a
    backward hook on ``hook_sae_acts_post`` fires, and attribution patching (gradient times
    feature change) works, also through ``HookedSAETransformer`` with ``use_error_term``.
    The step itself has zero gradient almost everywhere: these gradients are straight-through
    estimates (the "identity" training estimator), not derivatives of the forward function.

    Graded views (:meth:`set_activation_view`), for tools that rank features by activation
    (top-k example mining, activation quantiles, SAEBench autointerp, dashboards), which
    find nothing to rank in a 0/1 code. The view changes what ``encode`` returns and what
    ``hook_sae_acts_post`` sees; the reconstruction does not change:

    - ``"code"`` (default): the 0/1 code above;
    - ``"margin"``: relu(z) per bit, how far the pre-activation is past the firing
      threshold (0 exactly where the bit is 0, so L0 and firing rates are the code's);
    - ``"burst"``: the margin away from each bit's majority state, relu(z) for a bit that
      fires on at most half of the tokens and relu(-z) for one that fires on more, so a
      positive value marks the bit departing from its usual state, as ComSem's burst score
      log2(|h - p| + eps) does (BAE_METHOD.md section 5); needs the firing rates.

    In a graded view ``decode`` reads the code back from the values (a bit is in its
    departed state where its value is > 0, passed straight through in backward), so
    ``forward`` and spliced evaluations are those of the code. Exceptions, of measure zero:
    a majority-on bit whose z is exactly 0 reads as on, and in float16 a margin below the
    smallest subnormal reads as 0. Graded views need 1-bit features and the step
    binarization.
    """

    b_enc: nn.Parameter
    activation_view: str = "code"
    """What ``encode`` returns: one of :data:`ACTIVATION_VIEWS`; set with
    :meth:`set_activation_view`. Not saved: a loaded BAE starts with "code"."""
    _majority_on: Tensor | None = None

    @override
    def initialize_weights(self) -> None:
        self._init_binary_weights()

    def set_activation_view(
        self, view: str, firing_rates: Tensor | None = None
    ) -> BinaryAutoencoder:
        """Choose what ``encode`` returns (see the class docstring); returns ``self``.

        ``firing_rates`` [d_sae], each bit's fraction of tokens with h = 1, is required for
        "burst" and ignored otherwise.

        >>> sae = BinaryAutoencoder(BinaryAutoencoderConfig(d_in=2, d_sae=2))
        >>> sae.set_activation_view("margin").activation_view
        'margin'
        """
        _check_choice("view", view, ACTIVATION_VIEWS)
        if view != "code" and (self.cfg.bits_per_feature != 1 or self.cfg.binarization != "step"):
            raise ValueError(
                f"view={view!r} needs bits_per_feature=1 and binarization='step', this BAE "
                f"has bits_per_feature={self.cfg.bits_per_feature} and "
                f"binarization={self.cfg.binarization!r}"
            )
        majority = None
        if view == "burst":
            if firing_rates is None:
                raise ValueError("view='burst' needs firing_rates (each bit's rate in [0, 1])")
            rates = torch.as_tensor(firing_rates).detach()
            in_range = bool(((rates >= 0) & (rates <= 1)).all())
            if tuple(rates.shape) != (self.n_bits,) or not in_range:
                raise ValueError(
                    f"firing_rates of shape {tuple(rates.shape)}: "
                    f"expected ({self.n_bits},) values in [0, 1]"
                )
            majority = (rates > 0.5).to(self.W_enc.device)
        self.activation_view, self._majority_on = view, majority
        return self

    def graded_values(self, z: Float[Tensor, "... n_bits"]) -> Float[Tensor, "... n_bits"]:
        """The current view's values of pre-activations ``z`` (the 0/1 code for "code")."""
        if self.activation_view == "code":
            return self.code(z).to(self.dtype)
        if self._majority_on is not None:  # "burst": a majority-on bit departs where z <= 0
            z = torch.where(self._majority_on.to(z.device), -z, z)
        return torch.relu(z).to(self.dtype)

    @override
    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        z = self.hidden_pre(x)
        if self.activation_view != "code":
            return self.hook_sae_acts_post(self.graded_values(z))
        estimator = "square_wave" if self.cfg.binarization == "square_wave" else "identity"
        bits = binarize(z, estimator, period=self.cfg.square_wave_period)
        values = bits_to_values(bits, self.cfg.bits_per_feature).to(self.dtype)
        return self.hook_sae_acts_post(values)

    @override
    def decode(self, feature_acts: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        if self.activation_view != "code":
            departed = binarize(feature_acts, "identity")  # 1[value > 0], identity backward
            if self._majority_on is not None:
                departed = torch.where(
                    self._majority_on.to(departed.device), 1 - departed, departed
                )
            feature_acts = departed.to(self.dtype)
        return super().decode(feature_acts)

    @override
    def flip_bits_(self, mask: Tensor) -> int:
        n = super().flip_bits_(mask)
        if self._majority_on is not None and n:  # a flipped bit's usual state flips with it
            flipped = torch.as_tensor(mask, device=self._majority_on.device).to(torch.bool)
            self._majority_on = self._majority_on ^ flipped
        return n


@dataclass(kw_only=True)
class BinaryAutoencoderTrainingConfig(TrainingSAEConfig):
    """Training configuration of a BAE. Field docs become the CLI's --help.

    Coefficient conventions: SAELens's mse_loss is a per-token distortion (squared error
    summed over d_in, averaged over tokens). The default entropy reduction "sum" makes the
    entropy term a per-token rate, H = sum_j Hb(p_j) bits per token (the code length of the
    code under independent bits), so L = distortion + lambda_e * rate, and lambda_e is a
    price per bit in squared-error units. The default covariance reduction "per_bit" divides
    the pairwise sum by the number of bits: each bit's total dependence on the others, whose
    gradient per code entry does not grow with d_sae. Both are minibatch statistics, so a
    minibatch cannot resolve firing rates below 1 / batch size.
    """

    bits_per_feature: int = 1
    """k: bits per decoded feature (more-bit decode when > 1)."""
    binarization: Binarization = "step"
    """Set from the estimator: "square_wave" for estimator "square_wave", else "step"."""
    square_wave_period: float = 2.0
    """Period c of the square-wave binarization."""
    output_activation: OutputActivation = "identity"
    """Applied to the decoder output."""
    estimator: str = "sigmoid"
    """Backward surrogate of the step: identity | sigmoid | reference | square_wave."""
    estimator_temperature: float = 1.0
    """Temperature t of the sigmoid estimator (in units of z). The main job's recipe uses
    0.3: with a price per firing, a wide surrogate passes the price to bits far below their
    threshold and kills them."""
    entropy_coefficient: float = 0.0
    """lambda_e: weight of the entropy loss."""
    entropy_warm_up_steps: int = 0
    """Linear ramp of lambda_e from 0 over this many steps (SAELens convention)."""
    entropy_start_step: int = 0
    """The paper's hard warm-up: no entropy loss before this step."""
    entropy_threshold: float = 0.0
    """Hinge: the entropy loss is 0 while the code's total entropy is below this (bits)."""
    entropy_reduction: str = "sum"
    """"sum": bits per token (the code's rate); "mean": bits per code bit (0..1)."""
    covariance_coefficient: float = 0.0
    """lambda_c: weight of the dependence (covariance) penalty."""
    l0_coefficient: float = 0.0
    """Price per firing: adds l0_coefficient * (ones per token, minibatch mean) to the loss,
    its gradient through the estimator. Not in the paper (0 = the paper's objective): the
    entropy price's gradient per firing, log2((1 - p) / p), vanishes as a bit's rate p nears
    1/2, so entropy alone lets bits settle at high rates; this term charges every firing
    alike."""
    l0_warm_up_steps: int = 0
    """Linear ramp of the price per firing from 0 over this many steps."""
    covariance_warm_up_steps: int = 0
    """Linear ramp of lambda_c from 0 over this many steps."""
    covariance_penalty: str = "frobenius_probe"
    """Default "frobenius_probe": the dependence penalty must not dominate a training step,
    and this one costs ~1.1-1.2x a SAELens standard step where the exact "frobenius" costs
    3-4x and "abs" 2-7x (benchmarks/results/train_step_cpu.json); it is an unbiased estimate
    of "frobenius", so coefficients keep their meaning. The others stay selectable by name:
    "abs": sum_{i!=j} |C_ij| (the released method; plain float reference, O(n d_sae^2));
    "abs_binary": the same value, exact, from int8 co-occurrence counts of the 0/1 code (~3x
    faster on CPU, less with constant bits); "frobenius": sum_{i!=j} C_ij^2 through the n x n
    Gram matrix (O(n^2 d_sae)); "frobenius_probe": an unbiased 32-probe estimate of
    "frobenius" (O(n d_sae), a few % of a step). See bae_lens.penalties."""
    covariance_reduction: str = "per_bit"
    """"per_bit": pairwise sum / n_bits; "mean": per off-diagonal pair; "sum": total."""
    covariance_chunk_size: int = 1024
    """Column block of the exact "abs" penalty; bounds its memory to n_bits * chunk."""
    init_firing_rate: float | None = 0.05
    """Data-dependent start: on the first batch set b_dec to the batch mean and each b_enc
    so the bit fires on this fraction of tokens. None keeps b_enc = b_enc_init. A start
    with many bits above 1/2 lets the entropy loss turn them into always-on bits."""
    b_enc_init: float = 0.0
    """Constant encoder bias used when init_firing_rate is None."""
    log_every: int = 10
    """Record losses and code statistics in `training_log` every this many steps."""
    flip_majority_bits: bool = True
    """When the trained BAE is saved for inference, flip every bit that fired on more than
    half of the recent training tokens (running mean over ~100 minibatches), so it fires
    where it departs from its usual state. Reconstructions, entropy and dependence are
    unchanged (the loss is symmetric under a flip); L0 becomes the burst L0 and no bit is
    on by default. 1-bit features only."""

    @override
    @classmethod
    def architecture(cls) -> str:
        return ARCHITECTURE

    def __post_init__(self) -> None:
        if self.estimator == "square_wave":
            self.binarization = "square_wave"
        super().__post_init__()
        _validate_inference_fields(self)
        _check_choice("estimator", self.estimator, ESTIMATORS)
        if (self.binarization == "square_wave") != (self.estimator == "square_wave"):
            raise ValueError(
                f"binarization={self.binarization!r} needs estimator='square_wave' and "
                f"estimator={self.estimator!r} needs binarization='step'"
            )
        _check_choice("entropy_reduction", self.entropy_reduction, REDUCTIONS)
        _check_choice("covariance_reduction", self.covariance_reduction, (*REDUCTIONS, "per_bit"))
        _check_choice("covariance_penalty", self.covariance_penalty, DEPENDENCE_PENALTIES)
        _check_number("estimator_temperature", self.estimator_temperature, 0.0, strict=True)
        for field in (
            "entropy_coefficient",
            "covariance_coefficient",
            "l0_coefficient",
            "entropy_threshold",
            "entropy_warm_up_steps",
            "entropy_start_step",
            "covariance_warm_up_steps",
            "l0_warm_up_steps",
        ):
            _check_number(field, getattr(self, field), 0.0)
        _check_number("covariance_chunk_size", self.covariance_chunk_size, 1)
        _check_number("log_every", self.log_every, 1)
        if self.output_activation not in ("identity", "relu") and (
            self.normalize_activations in ("expected_average_only_in", "covariance_whitening")
        ):
            raise ValueError(
                f"output_activation={self.output_activation!r} cannot be combined with "
                f"normalize_activations={self.normalize_activations!r}: the scale is folded "
                "into the weights after training, which only identity or relu outputs allow"
            )
        if self.init_firing_rate is not None and not 0.0 < self.init_firing_rate < 1.0:
            raise ValueError(f"init_firing_rate={self.init_firing_rate!r} must be in (0, 1)")
        if not math.isfinite(self.b_enc_init):
            raise ValueError(f"b_enc_init={self.b_enc_init!r} must be a finite number")


BAE_OPTIONS: tuple[str, ...] = (
    "estimator",
    "estimator_temperature",
    "bits_per_feature",
    "entropy_coefficient",
    "entropy_warm_up_steps",
    "entropy_start_step",
    "entropy_threshold",
    "entropy_reduction",
    "covariance_coefficient",
    "covariance_warm_up_steps",
    "l0_coefficient",
    "l0_warm_up_steps",
    "covariance_penalty",
    "covariance_reduction",
    "init_firing_rate",
)
"""The training-config fields that training commands expose as options
(``bae-lens train``, ``python -m bae_lens.distributed``)."""


class BinaryAutoencoderTraining(_BinaryEncoding, TrainingSAE[BinaryAutoencoderTrainingConfig]):
    """Training BAE for SAELens's trainer: straight-through code, entropy and covariance."""

    b_enc: nn.Parameter

    def __init__(self, cfg: BinaryAutoencoderTrainingConfig, use_error_term: bool = False):
        super().__init__(cfg, use_error_term)
        self.training_log: list[dict[str, float]] = []
        """Every `log_every` steps: step, losses and code statistics (SAELens records
        nothing without wandb)."""
        self._needs_data_init = cfg.init_firing_rate is not None
        self.recent_firing_rates: Tensor | None = None
        """Running mean (decay 0.99 per step) of each bit's training firing rate."""

    @override
    def initialize_weights(self) -> None:
        self._init_binary_weights()
        if self.cfg.init_firing_rate is None:
            self.b_enc.data.fill_(self.cfg.b_enc_init)

    @override
    def process_state_dict_for_loading(self, state_dict: dict[str, Any]) -> None:
        # Weights come from a checkpoint: never re-initialise them from data.
        self._needs_data_init = False

    @override
    def get_coefficients(self) -> dict[str, float | TrainCoefficientConfig]:
        return {
            "entropy": TrainCoefficientConfig(
                value=self.cfg.entropy_coefficient,
                warm_up_steps=self.cfg.entropy_warm_up_steps,
            ),
            "covariance": TrainCoefficientConfig(
                value=self.cfg.covariance_coefficient,
                warm_up_steps=self.cfg.covariance_warm_up_steps,
            ),
            "l0": TrainCoefficientConfig(
                value=self.cfg.l0_coefficient, warm_up_steps=self.cfg.l0_warm_up_steps
            ),
        }

    def _surrogate_bits(self, hidden_pre: Tensor) -> Tensor:
        return binarize(
            hidden_pre,
            self.cfg.estimator,
            temperature=self.cfg.estimator_temperature,
            period=self.cfg.square_wave_period,
        )

    @override
    def encode_with_hidden_pre(
        self, x: Float[Tensor, "... d_in"]
    ) -> tuple[Float[Tensor, "... d_sae"], Float[Tensor, "... n_bits"]]:
        hidden_pre = self.hidden_pre(x)
        values = bits_to_values(self._surrogate_bits(hidden_pre), self.cfg.bits_per_feature)
        return self.hook_sae_acts_post(values.to(self.dtype)), hidden_pre

    @torch.no_grad()
    def initialize_from_batch(self, sae_in: Float[Tensor, "... d_in"]) -> None:
        """Data-dependent start (see ``init_firing_rate``): b_dec = batch mean, and each bit's
        b_enc set so the bit fires on ``init_firing_rate`` of the batch's rows. Any leading
        shape (``[batch, pos, d_in]``) counts as rows; a batch with no rows is skipped with a
        warning and leaves the weights as they are."""
        self._check_input(sae_in)
        rows = sae_in.reshape(-1, sae_in.shape[-1])  # [batch*pos, d_in]
        if rows.shape[0] == 0:
            logger.warning("data-dependent start skipped: the batch has no rows")
            return
        rate = self.cfg.init_firing_rate
        x = self.run_time_activation_norm_fn_in(rows.to(self.dtype))
        self.b_dec.data.copy_(x.mean(dim=0))
        # Same input as hidden_pre: b_dec is subtracted only when apply_b_dec_to_input.
        z = self._encoder_product(x - self.b_dec * self.cfg.apply_b_dec_to_input)  # [n, n_bits]
        k = min(max(int(round((1 - rate) * z.shape[0])), 1), z.shape[0])
        self.b_enc.data.copy_(-z.kthvalue(k, dim=0).values)
        self._needs_data_init = False

    @override
    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        n_rows = int(step_input.sae_in.reshape(-1, step_input.sae_in.shape[-1]).shape[0])
        if n_rows < 2:
            raise ValueError(
                f"minibatch of {n_rows} row(s): the entropy and dependence penalties are "
                "minibatch statistics and need at least 2 rows (bae_lens.train.OutlierFilter "
                "skips such batches)"
            )
        if self._needs_data_init and step_input.n_training_steps == 0:
            self.initialize_from_batch(step_input.sae_in)
        output = super().training_forward_pass(step_input)
        raise_if_loss_not_finite(output, step_input.n_training_steps, "BAE")
        if self.cfg.bits_per_feature == 1:
            self._track_firing_rates(output.feature_acts)
        record_step = step_input.n_training_steps % self.cfg.log_every == 0
        if not (record_step or step_input.is_logging_step):
            return output  # code statistics cost host syncs: only on logging steps
        stats = self._batch_code_stats(output.hidden_pre)
        output.metrics.update({f"bae/{name}": value for name, value in stats.items()})
        if record_step:
            record = {"step": float(step_input.n_training_steps)}
            record.update({name: float(loss.detach()) for name, loss in output.losses.items()})
            record.update(stats)
            self.training_log.append(record)
        return output

    @torch.no_grad()
    def _track_firing_rates(self, bits: Tensor) -> None:
        rates = firing_rates(rearrange(bits.detach(), "... n_bits -> (...) n_bits").float())
        if self.recent_firing_rates is None:
            self.recent_firing_rates = rates
        else:
            self.recent_firing_rates.mul_(0.99).add_(rates, alpha=0.01)

    @override
    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        if (
            self.cfg.flip_majority_bits
            and self.cfg.bits_per_feature == 1
            and self.recent_firing_rates is not None
        ):
            majority = self.recent_firing_rates > 0.5
            n = self.flip_bits_(majority)
            if n:
                self.recent_firing_rates[majority] = 1 - self.recent_firing_rates[majority]
                logger.info("flipped %d bits that fired on more than half of the tokens", n)
                for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                    state_dict[name] = getattr(self, name).data.clone()
            if self.training_log:  # the count goes with the last record of the log
                self.training_log[-1]["flipped_bits"] = float(n)
        super().process_state_dict_for_saving_inference(state_dict)

    @torch.no_grad()
    def _batch_code_stats(self, hidden_pre: Tensor) -> dict[str, float]:
        rates = global_firing_rates(self.code(hidden_pre))  # over every rank's rows
        return code_stats_from_rates(rates)._asdict()

    @override
    def calculate_aux_loss(
        self,
        step_input: TrainStepInput,
        feature_acts: Tensor,
        hidden_pre: Tensor,
        sae_out: Tensor,
    ) -> dict[str, Tensor]:
        coefficients = step_input.coefficients
        zero = hidden_pre.new_zeros(())
        entropy_on = (
            coefficients["entropy"] > 0
            and step_input.n_training_steps >= self.cfg.entropy_start_step
        )
        covariance_on = coefficients["covariance"] > 0
        l0_on = coefficients.get("l0", 0.0) > 0
        if not (entropy_on or covariance_on or l0_on):  # skip terms while their weight is 0
            return {"entropy_loss": zero, "covariance_loss": zero} | (
                {"l0_loss": zero} if "l0" in coefficients else {}
            )
        if (
            self.cfg.bits_per_feature == 1
            and self.cfg.estimator != "reference"
            and not self.hook_sae_acts_post.fwd_hooks
        ):
            # feature_acts are these bits; the estimator's backward is linear in the incoming
            # gradient (except "reference"), so one estimator node serves every loss term
            # with the same gradient, at half the cost of a second binarization.
            bits = rearrange(feature_acts, "... n_bits -> (...) n_bits")
        else:
            bits = rearrange(self._surrogate_bits(hidden_pre), "... n_bits -> (...) n_bits")
        bits = gather_rows(bits)  # under data parallelism: the global batch
        losses = {"entropy_loss": zero, "covariance_loss": zero}
        if "l0" in coefficients:
            losses["l0_loss"] = zero
        if l0_on:
            losses["l0_loss"] = coefficients["l0"] * bits.sum(dim=1).mean()
        if entropy_on:
            losses["entropy_loss"] = coefficients["entropy"] * entropy_loss(
                bits, self.cfg.entropy_threshold, self.cfg.entropy_reduction
            )
        if covariance_on:
            per_bit = self.cfg.covariance_reduction == "per_bit"
            penalty = dependence_penalty(
                bits,
                self.cfg.covariance_penalty,
                "sum" if per_bit else self.cfg.covariance_reduction,
                self.cfg.covariance_chunk_size,
            )
            scale = coefficients["covariance"] / (self.n_bits if per_bit else 1)
            losses["covariance_loss"] = scale * penalty
        return losses


def _register_one(
    registry: dict[str, tuple[type, type]], architecture: str, sae_cls: type, cfg_cls: type
) -> None:
    existing = registry.get(architecture)
    if existing is None:
        registry[architecture] = (sae_cls, cfg_cls)
        return
    if existing != (sae_cls, cfg_cls):
        have = f"{existing[0].__module__}.{existing[0].__qualname__}"
        want = f"{sae_cls.__module__}.{sae_cls.__qualname__}"
        raise ValueError(
            f"SAELens architecture {architecture!r} is already registered to {have}; "
            f"bae_lens cannot register {want} under the same name"
        )


def featurewise_weight_metrics(sae: Any) -> dict[str, list[float]]:
    """SAELens's per-feature weight metrics for a BAE with ``bits_per_feature = k > 1``.

    SAELens's ``get_featurewise_weight_based_metrics`` pairs column j of W_enc with row j of
    W_dec, which fails when W_enc has d_sae * k columns. Here feature j's encoder direction
    is its k bits' columns combined with the weights ``2^i / (2^k - 1)`` by which
    ``bits_to_values`` combines the bits, and its bias the same combination of theirs; then
    encoder_norm, encoder_decoder_cosine_sim and encoder_bias are SAELens's, one per feature.
    """
    k = sae.cfg.bits_per_feature
    weights = bit_weights(k, device=sae.W_enc.device, dtype=sae.W_enc.dtype)
    w_enc = rearrange(sae.W_enc.detach(), "d (f k) -> d f k", k=k) @ weights  # [d_in, d_sae]
    b_enc = rearrange(sae.b_enc.detach(), "(f k) -> f k", k=k) @ weights  # [d_sae]
    cosine = torch.nn.functional.cosine_similarity(w_enc.T, sae.W_dec.detach(), dim=-1)
    return {
        "encoder_norm": w_enc.norm(dim=0).cpu().tolist(),
        "encoder_decoder_cosine_sim": cosine.cpu().tolist(),
        "encoder_bias": b_enc.cpu().tolist(),
    }


def _install_featurewise_metrics() -> None:
    """Route SAELens's featurewise weight metrics for a BAE with k > 1 bits per feature
    to :func:`featurewise_weight_metrics` (``run_evals`` looks the function up in its
    module at call time); every other SAE keeps SAELens's own. Idempotent."""
    import sae_lens.evals as evals

    original = evals.get_featurewise_weight_based_metrics
    if getattr(original, "_bae_lens", False):
        return

    def metrics(sae: Any) -> dict[str, Any]:
        if isinstance(sae, _BinaryEncoding) and sae.cfg.bits_per_feature > 1:
            return featurewise_weight_metrics(sae)
        return original(sae)

    metrics._bae_lens = True  # type: ignore[attr-defined]
    evals.get_featurewise_weight_based_metrics = metrics


def register() -> None:
    """Register the BAE with SAELens under ``"bae"``; idempotent.

    Also lets SAELens's featurewise evals handle ``bits_per_feature > 1``
    (:func:`featurewise_weight_metrics`). Raises ValueError naming both classes if another
    class holds the name.
    """
    _install_featurewise_metrics()
    _register_one(SAE_CLASS_REGISTRY, ARCHITECTURE, BinaryAutoencoder, BinaryAutoencoderConfig)
    _register_one(
        SAE_TRAINING_CLASS_REGISTRY,
        ARCHITECTURE,
        BinaryAutoencoderTraining,
        BinaryAutoencoderTrainingConfig,
    )
