"""neuro_lpc: exact discrete-time Langevin predictive coding (Zahid et al., ICML 2024, Algorithm 1).

The layers, lowest first (a module imports only from layers below it; nothing here imports ``circuits``):
errors, validation, likelihoods, data, distributed, checkpoint, record, theory, networks, model, objectives,
chain, fast, langevin, preconditioning, config, metrics, train, cli (``models``: a deprecated alias of networks).
"""
from .errors import CheckpointError, DivergenceError, TrainingInterrupted
from .likelihoods import (LIKELIHOODS, BernoulliLikelihood, DiscretizedGaussianLikelihood, GaussianLikelihood,
                          Likelihood, make_likelihood)
from .model import GenerativeModel
from .networks import ARCHITECTURES, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, MLPImageEncoder, build_decoder_encoder
from .chain import SampleResult
from .langevin import LangevinSampler
from .config import TrainConfig

__all__ = [
    "GenerativeModel", "GaussianLikelihood", "DiscretizedGaussianLikelihood", "BernoulliLikelihood", "Likelihood",
    "LIKELIHOODS", "make_likelihood", "LangevinSampler", "SampleResult", "ConvDecoder", "ConvEncoder", "MLPEncoder", "MLPDecoder", "MLPImageEncoder", "ARCHITECTURES",
    "build_decoder_encoder", "TrainConfig", "DivergenceError", "CheckpointError", "TrainingInterrupted",
]

def __getattr__(name):
    # loaded on first use: the trainers pull in data / tqdm, the theory scipy.linalg
    lazy = {
        "LPCTrainer": "train", "VAETrainer": "train", "TRAINERS": "train", "build_model": "train", "load_trained": "train",
        "gaussian_posterior": "theory", "ula_stationary": "theory", "ula_stationary_eigen": "theory",
        "linear_sde_stationary": "theory", "euler_maruyama_stationary": "theory", "euler_stable_dt": "theory",
    }
    if name in lazy:
        from importlib import import_module

        return getattr(import_module(f".{lazy[name]}", __name__), name)
    raise AttributeError(name)
