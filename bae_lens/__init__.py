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

__all__ = [
    "BinaryAutoencoder",
    "BinaryAutoencoderConfig",
    "BinaryAutoencoderTraining",
    "BinaryAutoencoderTrainingConfig",
    "register",
]
__version__ = "0.1.0"
