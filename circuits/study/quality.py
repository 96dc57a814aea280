"""Sample quality of each trained model: ``neuro_lpc.metrics.evaluate_samples`` against the test split.

Default features: ``neuro_lpc.metrics.default_feature(device)`` (Inception-v3 FID + KID, also on CPU);
``--feature classifier`` is the small-classifier distance, labelled as not comparable to published FID.
The real set's statistics are cached per (data set, feature network, split, n) in ``cache_dir``.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class NonFiniteSamples(ValueError):
    """A model's samples contain NaN or inf (its row is reported as diverged)."""


def choose_feature(cfg, device) -> str:
    if cfg.feature != "auto":
        return cfg.feature
    from neuro_lpc.metrics import default_feature

    return default_feature(device)


def feature_network(cfg, device, feature: str):
    """The feature network (the small classifier is trained once per data set and cached)."""
    from neuro_lpc.metrics import SmallClassifierFeatures, make_feature_network

    if feature == "classifier":
        return SmallClassifierFeatures.for_dataset(cfg.dataset, root=cfg.data_root, cache_dir=cfg.cache_dir, device=device,
                                                   epochs=1 if cfg.quick_features else 5, seed=cfg.seed)
    return make_feature_network(feature, cfg.dataset, device=device, cache_dir=cfg.cache_dir, root=cfg.data_root)


def real_set(cfg, net):
    """Statistics of the real set every row is scored against (cached): n = min(n_samples, test split) real test
    images by default; under ``--full-protocol`` the paper's protocol, the whole training split."""
    from neuro_lpc.data import load_dataset
    from neuro_lpc.metrics import real_statistics

    if cfg.full_protocol:
        return real_statistics(cfg.dataset, net, None, split="train", root=cfg.data_root, cache_dir=cfg.cache_dir)
    _, test, _ = load_dataset(cfg.dataset, cfg.data_root)
    return real_statistics(cfg.dataset, net, min(cfg.n_samples, len(test)), split="test", root=cfg.data_root,
                           cache_dir=cfg.cache_dir)


def real_set_description(cfg, real) -> dict:
    """Which real set the FIDs used (in the report)."""
    what = ("the whole training split (the paper's protocol: 50,000 samples against the training set's statistics)"
            if cfg.full_protocol else "a fixed random subset of the test split (seed 0)")
    return {"dataset": cfg.dataset, "split": real.split, "n": int(real.n), "feature": real.feature, "what": what}


# ------------------------------------------------------------------------------- seeds and sample counts
def seed_index(name: str) -> int:
    """k of a seed replica 'row@k' (0 for a base row)."""
    return int(name.rsplit("@", 1)[1]) if "@" in name else 0


def sample_seed(cfg, method_or_name) -> int:
    """The generator seed of a row's samples: cfg.seed + 77 (+ 1000 k for seed replica k: other draws)."""
    name = method_or_name if isinstance(method_or_name, str) else method_or_name.name
    return cfg.seed + 77 + 1000 * seed_index(name)


def samples_per_row(cfg, by_name: dict):
    """n(name): a row with ``cfg.seeds`` seeds draws ceil(n_samples / seeds) per seed (pooled: >= n_samples);
    every other row n_samples."""
    per_seed = math.ceil(cfg.n_samples / max(1, cfg.seeds))

    def n_for(name: str) -> int:
        m = by_name.get(name)
        return per_seed if m is not None and m.compared and cfg.seeds > 1 else cfg.n_samples
    return n_for


def evaluate_group(images: list, features: list, real, net, feature: str, cfg, seeds: list[int]) -> dict:
    """A row's metrics over its seeds: the pooled samples of every seed (FID, KID, density, coverage with their
    within-run se: bootstrap / subsets) and, per seed, FID and KID at the per-seed n; ``seed_mean``: the mean and
    the se across seeds (std / sqrt(S)) -- the error bars that include training variance."""
    from neuro_lpc.metrics import frechet_distance_features, kernel_inception_distance

    pooled_feats = None if any(f is None for f in features) else torch.cat([torch.as_tensor(f) for f in features])
    q = evaluate(torch.cat(images), real, net, feature, cfg, features=pooled_feats)
    key = getattr(net, "metric", "fid")
    q["seeds"] = list(seeds)
    per = []
    for s, imgs, f in zip(seeds, images, features):
        f = net(imgs) if f is None else torch.as_tensor(f)
        fn = f.numpy().astype(np.float64)
        k = kernel_inception_distance(real.features, fn, subset_size=min(1000, fn.shape[0]), n_subsets=50)
        per.append({"seed": s, "n": int(fn.shape[0]), key: frechet_distance_features(fn, real.features),
                    "kid": k["kid"], "kid_se": k["kid_se"]})
    q["per_seed"] = per
    if len(per) > 1:
        stats = {}
        for m in (key, "kid"):
            stats[m], stats[f"{m}_se"] = seed_statistics([p[m] for p in per])
        stats["n_per_seed"] = per[0]["n"]
        q["seed_mean"] = stats
    return q


def seed_statistics(values) -> tuple[float, float]:
    """(mean, se) of one number measured once per training seed: se = s / sqrt(S) with s the sample standard
    deviation (ddof 1), so se^2 is unbiased for Var(mean) -- training variance and the metric's own sampling noise
    at the per-seed n together."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        raise ValueError("seed statistics need at least two seeds")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


# ----------------------------------------------------------------------------------- reference rows
REFERENCES = ("data", "untrained")
REFERENCE_LABELS = {"data": "reference · data (held-out real images)",
                    "untrained": "reference · untrained (seeded initial model)"}


def held_out_images(cfg, n: int) -> torch.Tensor:
    """n real images the real set does not hold: the test split's images after the real set's (the same seeded
    permutation); under the full protocol (real set = training split) the test split."""
    from neuro_lpc.data import dataset_tensor, load_dataset

    _, test, _ = load_dataset(cfg.dataset, cfg.data_root)
    if cfg.full_protocol:
        x, _ = dataset_tensor(test, min(n, len(test)))
        return x
    n_real = min(cfg.n_samples, len(test))
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[n_real:n_real + n]
    if len(index) < 2:
        raise ValueError("the test split has no images left beside the real set")
    images = getattr(test, "images", None)
    return images[index] if images is not None else torch.stack([test[int(i)][0] for i in index])


def untrained_model(cfg, info):
    """The seeded initial model of discrete LPC (its weights before the first optimiser step)."""
    from neuro_lpc.train import build_model

    from .train import train_config

    model, _ = build_model(train_config(cfg, "lpc", info.n_train), info.image_size, info.channels)
    return model.eval()


def reference_images(cfg, which: str, info, device) -> torch.Tensor:
    if which == "data":
        return held_out_images(cfg, cfg.n_samples)
    return draw_samples(untrained_model(cfg, info).to(device), cfg.n_samples, cfg.seed + 77, device)


def reference_job(cfg, which: str, net):
    """A worker job: a reference row's images and their features."""
    def job(ctx):
        images = reference_images(cfg, which, ctx.info, ctx.device)
        net.progress = False
        return {"images": images, "features": net(images)}
    return job


def evaluate_reference(which: str, done, real, net, feature: str, cfg, device, info=None, scorer=None) -> dict:
    """A reference row: ``{"samples": metrics, "images", "curve_kid"}`` (``done``: its worker job's output)."""
    try:
        if done is None:
            images = reference_images(cfg, which, info, device)
            done = {"images": images, "features": net(images)}
        q = evaluate(done["images"], real, net, feature, cfg, features=done["features"])
    except (ValueError, RuntimeError) as e:
        return {"not_run": f"{type(e).__name__}: {e}"}
    out = {"samples": q, "images": done["images"]}
    if scorer is not None:
        out["curve_kid"] = scorer(done["images"][: cfg.curve_samples])["kid"]
    return out


# ------------------------------------------------------------------------------------ learning curves
def curve_scorer(cfg, device, info, net):
    """The learning curves' metric (``circuits.study.curves``): KID on the small classifier's features (labelled
    data sets; trained once per data set, cached) against 2,000 training images; the run's own feature network
    where the data set has no labels or on a GPU."""
    from neuro_lpc.data import load_dataset
    from neuro_lpc.metrics import SmallClassifierFeatures

    from .curves import CurveScorer

    train, _, _ = load_dataset(cfg.dataset, cfg.data_root)
    n = min(2000, len(train))
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:n]
    images = getattr(train, "images", None)
    real = images[index] if images is not None else torch.stack([train[int(i)][0] for i in index])
    if info.num_classes > 0 and torch.device(device).type == "cpu":
        cnet = SmallClassifierFeatures.for_dataset(cfg.dataset, root=cfg.data_root, cache_dir=cfg.cache_dir,
                                                   device=device, epochs=1 if cfg.quick_features else 3, seed=0)
        return CurveScorer(cnet, real, "KID (small-classifier features)")
    return CurveScorer(net, real, f"KID ({getattr(net, 'key', 'features')})")


def curve_recorder_factory(cfg, scorer):
    """(row name, folder, sample) -> a CurveRecorder at ``cfg.curve_points`` log-spaced steps of ``train_batches``
    (a wall-time budget row: log-spaced fractions of its budget)."""
    from .curves import CurveRecorder, curve_steps

    def make(name, folder, sample):
        return CurveRecorder(curve_steps(cfg.train_batches, cfg.curve_points), sample, scorer, cfg.curve_samples,
                             cfg.seed + 99, folder, points=cfg.curve_points)
    return make


@torch.no_grad()
def draw_samples(model, n: int, seed: int, device) -> torch.Tensor:
    """n generative samples (CPU), the same generator seed for every model."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.cat([model.sample(min(1000, n - i), generator=g).cpu() for i in range(0, n, 1000)])


def evaluate(images: torch.Tensor, real, net, feature: str, cfg, features=None) -> dict:
    """The metric dict of one model's samples (``features``: their ``net`` features if already computed).
    Non-finite images raise NonFiniteSamples (the row "diverged")."""
    from neuro_lpc.metrics import evaluate_samples

    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images.reshape(images.shape[0], -1))).any(1).sum())
        raise NonFiniteSamples(f"{bad} of {images.shape[0]} samples contain NaN or inf")
    return evaluate_samples(images, real, feature=feature, k=cfg.k, network=net, device="cpu", fake_features=features)


def worker_features(cfg, device, net, n_for=None):
    """``post(ctx, name, trained)`` for ``parallel.pretrain``: a freshly trained row's samples and their features,
    computed in its training worker (one thread) while the other rows still train.  Rows that reuse another row's
    model (``same_as``) and non-finite samples are left to the parent (None / no features).  ``n_for(name)``: the
    row's number of samples (default n_samples)."""
    def post(ctx, name, trained):
        if trained is None or trained.same_as is not None:
            return None
        model = trained.sampler if trained.sampler is not None else trained.model
        trained.model.eval(), trained.encoder.eval()
        images = draw_samples(model, n_for(name) if n_for else cfg.n_samples, sample_seed(cfg, name), device)
        if not torch.isfinite(images).all():
            return {"images": images, "features": None}
        net.progress = False           # two workers' bars on one terminal would interleave
        return {"images": images, "features": net(images)}
    return post


def features_in_parallel(net, images: torch.Tensor, workers: int, scratch) -> torch.Tensor:
    """``net(images)`` split into ``workers`` chunks, each in a forked one-thread process (``parallel.fork_map``):
    one thread per core is the efficient setting for Inception on a 2-core CPU (bench/RESULTS.md)."""
    from .parallel import fork_map

    if workers < 2 or images.shape[0] < 2 * workers:
        return net(images)
    chunks = list(torch.tensor_split(images, workers))

    def one(chunk):
        net.progress = False
        return net(chunk)
    return torch.cat(fork_map(one, chunks, workers, 1, scratch))


def sample_quality(models: dict, cfg, device, feature: str) -> tuple[dict, dict]:
    """(metrics, samples) per model name: every model's ``n_samples`` samples against the same real set."""
    net = feature_network(cfg, device, feature)
    real = real_set(cfg, net)
    results, samples = {}, {}
    for name, model in models.items():
        samples[name] = draw_samples(model, cfg.n_samples, cfg.seed + 77, device)
        results[name] = evaluate(samples[name], real, net, feature, cfg)
    return results, samples


@torch.no_grad()
def aggregate_posterior(encoder, x: torch.Tensor, prior_std: float = 1.0) -> dict:
    """The encoder's aggregate posterior q(z) = mean over images of q(z|x), as a Gaussian: its mean variance per
    latent unit relative to the prior's (``variance_ratio``) and its KL to the prior (nats).  Cheap (one encoder
    pass) and per model: how far the model's latents sit from where prior samples land."""
    mean, var = encoder(x)
    mean, var = mean.double(), var.double()
    cov = torch.cov(mean.T) + torch.diag(var.mean(0))
    d = cov.shape[0]
    mu = mean.mean(0)
    s2 = prior_std ** 2
    kl = 0.5 * (torch.trace(cov) / s2 + mu @ mu / s2 - d - torch.logdet(cov / s2))
    return {"variance_ratio": float(torch.diagonal(cov).mean() / s2), "kl_to_prior": float(kl), "n": int(x.shape[0])}
