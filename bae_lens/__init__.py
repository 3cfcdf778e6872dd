"""bae_lens: Binary Autoencoders (arXiv 2509.20997) as a SAELens architecture.

Importing the package registers the ``"bae"`` architecture with SAELens, so
``SAE.load_from_disk`` and ``LanguageModelSAETrainingRunner`` handle BAEs.
"""

from bae_lens.bae import (
    BinaryAutoencoder,
    BinaryAutoencoderConfig,
    BinaryAutoencoderTraining,
    BinaryAutoencoderTrainingConfig,
    register,
)

register()

from bae_lens import transcoders  # noqa: E402,F401  (registers "bae_transcoder")
from bae_lens.io import load_bae, load_sae  # noqa: E402  (after registration)

__all__ = [
    "BinaryAutoencoder",
    "BinaryAutoencoderConfig",
    "BinaryAutoencoderTraining",
    "BinaryAutoencoderTrainingConfig",
    "load_bae",
    "load_sae",
    "register",
]
__version__ = "0.1.0"
