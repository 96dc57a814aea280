"""neuro_lpc: exact discrete-time Langevin predictive coding (Zahid et al., ICML 2024, Algorithm 1)."""
from .errors import CheckpointError, DivergenceError, TrainingInterrupted
from .likelihoods import (LIKELIHOODS, BernoulliLikelihood, DiscretizedGaussianLikelihood, GaussianLikelihood,
                          Likelihood, make_likelihood)
from .model import GenerativeModel
from .models import ARCHITECTURES, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, MLPImageEncoder, build_decoder_encoder
from .langevin import LangevinSampler, SampleResult
from .config import TrainConfig

__all__ = [
    "GenerativeModel", "GaussianLikelihood", "DiscretizedGaussianLikelihood", "BernoulliLikelihood", "Likelihood",
    "LIKELIHOODS", "make_likelihood", "LangevinSampler", "SampleResult", "ConvDecoder", "ConvEncoder", "MLPEncoder", "MLPDecoder", "MLPImageEncoder", "ARCHITECTURES",
    "build_decoder_encoder", "TrainConfig", "DivergenceError", "CheckpointError", "TrainingInterrupted",
]


def __getattr__(name):  # lazy: trainers pull in data/tqdm
    if name in ("LPCTrainer", "VAETrainer", "TRAINERS", "build_model", "load_trained"):
        from . import train
        return getattr(train, name)
    raise AttributeError(name)
