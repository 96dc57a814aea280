"""Sample quality of each trained model: ``neuro_lpc.metrics.evaluate_samples`` against the test split.

Default features: ``neuro_lpc.metrics.default_feature(device)`` (Inception-v3 FID + KID, also on CPU);
``--feature classifier`` is the small-classifier distance, labelled as not comparable to published FID.
The real set's statistics are cached per (data set, feature network, split, n) in ``cache_dir``.
"""
from __future__ import annotations

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
    """Statistics of n real test images, n = min(n_samples, test split) (cached)."""
    from neuro_lpc.data import load_dataset
    from neuro_lpc.metrics import real_statistics

    _, test, _ = load_dataset(cfg.dataset, cfg.data_root)
    return real_statistics(cfg.dataset, net, min(cfg.n_samples, len(test)), split="test", root=cfg.data_root,
                           cache_dir=cfg.cache_dir)


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


def worker_features(cfg, device, net):
    """``post(ctx, name, trained)`` for ``parallel.pretrain``: a freshly trained row's samples and their features,
    computed in its training worker (one thread) while the other rows still train.  Rows that reuse another row's
    model (``same_as``) and non-finite samples are left to the parent (None / no features)."""
    def post(ctx, name, trained):
        if trained is None or trained.same_as is not None:
            return None
        model = trained.sampler if trained.sampler is not None else trained.model
        trained.model.eval(), trained.encoder.eval()
        images = draw_samples(model, cfg.n_samples, cfg.seed + 77, device)
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
