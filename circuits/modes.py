"""How weights get onto an analog array: the learning modes (DESIGN.md section 3; in-memory-local: issue 17).

``deploy``
    Learn digitally (the decoder's weights are exact during training: weight-device sources are
    switched off in the training presentations, every other source stays), then program the
    weights once onto the array: programming error drawn *at programming* (one draw per
    deployment), drift from that moment (time since programming on the device clock), read noise
    per matrix-vector product. With preset ``ideal`` and adiabatic error units the training is
    discrete LPC exactly.
``hardware-aware``
    Learn with the device non-idealities injected in the forward pass: every batch is presented on
    a freshly programmed array (a fresh programming draw and fresh drift exponents *per batch*, drift
    evaluated at the deployment horizon ``t_start``, read noise per product), gradients straight
    through to the digital weights; then deploy as above.
``in-memory``
    The weights live on the devices. The optimiser's update (Adam on the digital gradient) is turned
    into pulse counts (stochastic rounding) and written by pulses (``circuits.array.apply_pulses``:
    dw_min, up/down asymmetry, bounds, cycle-to-cycle noise per pulse, device-to-device spread frozen
    per device); the first programming of the initial weights carries programming noise, later writes
    carry only pulse noise; each device's drift clock restarts at its last write. The digital copy of
    the decoder's weights is set to what the devices store after every write, so the gradient of the
    next batch is taken at the stored weights (straight through drift and read noise). Time base:
    the device clock advances by the presentation's simulated duration (steps x dt) per batch, or by
    ``seconds_per_batch``.
``in-memory-local``
    As ``in-memory`` (one array for the run, clock, drift since each write, the array in the checkpoint), but the
    array-covered weights are written only by the array's own local pulsed rule (``circuits.local_update``): the
    edge signals of every mapped layer (its input a, the precision-weighted error d at its output) recorded at every
    step of the presentation, where the circuit accumulates its theta-gradient, become coincidences of stochastic
    pulse trains (aihwkit's analog SGD: ``desired_bl``, ``update_bl_management``, ``update_management``), written by
    each device's own pulses. No per-weight digital state: a global learning rate (``lr``, plain SGD for the decoder's
    parameters that are not on the array and the likelihood's); the encoder (the warm start) keeps its Adam.
    Optionally a Tiki-Taka transfer (``pulse_update.transfer_every``): the local updates go to a fast array whose
    columns are written onto the slow array that the circuit reads (``circuits.local_update.Transfer``).

Evaluation (:func:`deployed_model`): every mode is scored on the weights *as they sit on the device*:
a fresh programming draw for ``deploy`` / ``hardware-aware`` (the array as trained for ``in-memory``),
drift at the stated time since programming (or since the last write), read noise fresh per read.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from neuro_lpc.model import GenerativeModel

from .noise.arrays import WEIGHT_DEVICE_TYPES, AnalogArray
from .timescales import derive_seed

__all__ = ["LEARNING_MODES", "check_learning_mode", "split_weight_sources", "program_array", "deployed_model",
           "DeployedDecoder", "TIME_POINTS", "ON_DEVICE_MODES"]

LEARNING_MODES = ("deploy", "hardware-aware", "in-memory", "in-memory-local")
ON_DEVICE_MODES = ("in-memory", "in-memory-local")   # one persistent array written by pulses during training

# time since programming at which deployments are scored in sweeps: 1 s ... 1 month
TIME_POINTS = {"1 s": 1.0, "1 min": 60.0, "1 h": 3600.0, "1 day": 86400.0, "1 week": 604800.0, "1 month": 2592000.0}


def check_learning_mode(mode: str, decoder: nn.Module | None = None) -> str:
    """Validate a learning mode name (and that the decoder has weights an array can hold); one-line errors."""
    if mode not in LEARNING_MODES:
        raise ValueError(f"unknown learning mode {mode!r}; choose one of {', '.join(LEARNING_MODES)}")
    if decoder is not None and not any(p.dim() >= 2 for p in decoder.parameters()):
        raise ValueError(f"learning mode {mode!r} puts the decoder's weights on an analog array, but this decoder has no "
                         f"weight matrices (parameters of >= 2 dimensions, e.g. nn.Linear / nn.Conv2d weights)")
    return mode


def split_weight_sources(noise) -> tuple[list, list]:
    """(weight-device sources, other sources) of a NoiseModel."""
    dev = [s for s in noise.sources if s.type in WEIGHT_DEVICE_TYPES]
    rest = [s for s in noise.sources if s.type not in WEIGHT_DEVICE_TYPES]
    return dev, rest


def program_array(model: GenerativeModel, noise, seed: int, t_since_programming: float | None = None,
                  stream: int = 0) -> AnalogArray | None:
    """Program the model's current (digital) weights once onto a fresh array (one programming draw from
    ``seed``/``stream``) and set its clock to ``t_since_programming`` (default: the drift source's t_start)."""
    dev, _ = split_weight_sources(noise)
    if not dev:
        return None
    weights = dict(model.decoder.named_parameters())
    gen = torch.Generator().manual_seed(derive_seed(derive_seed(seed, 100), stream))
    arr = AnalogArray.from_noise(weights, dev, seed=derive_seed(derive_seed(seed, 200), stream), program_gen=gen)
    if arr is not None and t_since_programming is not None:
        arr.clock = float(t_since_programming)
    return arr


class DeployedDecoder(nn.Module):
    """A copy of a decoder whose weights are those an array reads (drift at its clock), with read noise fresh
    per product from ``generator`` (per sample, per output). Evaluation only (no gradients to the array)."""

    def __init__(self, decoder: nn.Module, array: AnalogArray, generator: torch.Generator | None = None):
        super().__init__()
        self.inner = copy.deepcopy(decoder)
        with torch.no_grad():
            params = dict(self.inner.named_parameters())
            for name, w in array.read_all().items():
                params[name].copy_(w)
        for p in self.inner.parameters():
            p.requires_grad_(False)
        self.hooks = array.read_hooks(self.inner, generator)
        if self.hooks is not None:
            self.hooks.__enter__()
        self.clock = array.clock

    def forward(self, z):
        return self.inner(z)


def deployed_model(model: GenerativeModel, array: AnalogArray | None, generator: torch.Generator | None = None
                   ) -> GenerativeModel:
    """The model as it runs on the array (weights read at the array's clock, read noise per product)."""
    if array is None:
        return model
    dec = DeployedDecoder(model.decoder, array, generator)
    return GenerativeModel(dec, copy.deepcopy(model.likelihood), prior_std=model.prior_std, latent_dim=model.latent_dim)


class ReadoutDecoder(nn.Module):
    """z -> the prediction g(z) as the circuit's error units see it: the value units' output path (the value-site
    transforms in source order: mismatch, DAC quantisation, ...), the decoder with the circuit's weights (on its
    array: programming, drift at the array's clock, read noise per product; weight quantisation), then the
    prediction-site transforms (e.g. the ADC's clip and quantisation) -- one forward of ``CircuitRun``'s step, so
    generative samples go through the same read-out path the circuit trained and samples with (issue 14).

    The circuit's frozen draws (mismatch, programming) are those of ``circuit`` (its config's seed); fresh draws
    (read noise, stochastic rounding) come from ``generator``.
    """

    def __init__(self, circuit, generator: torch.Generator | None = None):
        super().__init__()
        self.circuit = circuit
        self.inner = circuit.model.decoder
        self.generator = generator

    def forward(self, z):
        from .run import CircuitRun

        c = self.circuit
        gen = self.generator if self.generator is not None else torch.Generator(device=z.device).manual_seed(0)
        x = torch.zeros(z.shape[0], *c.context.obs_shape, device=z.device, dtype=z.dtype)
        with torch.no_grad():
            return CircuitRun(c, x, z.detach(), gen).readout()


def readout_model(model: GenerativeModel, circuit_config, array: AnalogArray | None = None,
                  generator: torch.Generator | None = None, noise_state: dict | None = None) -> GenerativeModel:
    """The model whose decoder is the circuit's read-out path (:class:`ReadoutDecoder`): ``sample`` then gives the
    circuit's generative samples, with the unit and device non-idealities of ``circuit_config``'s noise model."""
    from .circuit import Circuit

    circuit = Circuit(model, circuit_config, array=array, noise_state=noise_state)
    if not circuit.sources and array is None:
        return model                # nothing between z and the decoder: the model itself
    return GenerativeModel(ReadoutDecoder(circuit, generator), copy.deepcopy(model.likelihood), prior_std=model.prior_std,
                           latent_dim=model.latent_dim)
