"""Deprecated: the decoder / encoder networks moved to :mod:`neuro_lpc.networks`.

(``neuro_lpc.models`` was too close to ``neuro_lpc.model``, the generative model.)  This shim re-exports
the public names for one release and warns on import.
"""
from __future__ import annotations

import warnings

from .networks import (ARCHITECTURES, SUPPORTED_IMAGE_SIZES, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder,
                       MLPImageEncoder, build_decoder_encoder)

__all__ = ["SUPPORTED_IMAGE_SIZES", "ConvDecoder", "ConvEncoder", "MLPEncoder", "MLPDecoder", "MLPImageEncoder",
           "ARCHITECTURES", "build_decoder_encoder"]

warnings.warn("neuro_lpc.models is deprecated; use neuro_lpc.networks", DeprecationWarning, stacklevel=2)
