"""What Brian2 can run of a torch circuit: a model + CircuitConfig as a plain spec, or a one-line refusal.

:func:`circuit_spec` builds the torch :class:`~circuits.circuit.Circuit` (which validates the config, checks
the EM step size and makes every frozen draw from ``config.seed``) and reads off what the Brian2 network
(``circuits.brian.network``) needs: per-unit time constants, the frozen gains/offsets of mismatch, the
forward weights as the circuit reads them (programming noise included) and the feedback copy (feedback
mismatch), and the per-unit noise amplitudes q = sigma^2 tau of the additive white noise:

    value units  q_z = 2 T + sum over thermal sources of 2 (s value_std)^2   (relative units, s = s_p)
                                                     or value_std^2 tau_z    (absolute units)
    error units  q_e = sum over thermal sources of 2 (error_std / sigma_x)^2 or error_std^2 tau_e

which is ``circuits.noise.base._white_coefs``: a per-step std sqrt(q dt / tau). The two simulators then
integrate the same SDE with the same frozen draws (they differ only in the fresh random numbers).

Expressible (see docs/brian2.md): Gaussian likelihood, ``nn.Linear`` or an ``nn.Sequential`` of
``nn.Linear`` layers with elementwise tanh / sigmoid / relu / silu (any depth; 1-2 hidden layers tested),
error forms "error" / "bogacz", adiabatic or finite tau_e, any temperature, any time-constant model, and
the sources ``thermal`` (value noise; error noise only with finite tau_e), ``mismatch``,
``feedback_mismatch`` and ``weight_programming``. Everything else raises :class:`BrianUnsupported`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neuro_lpc.likelihoods import GaussianLikelihood
from neuro_lpc.model import GenerativeModel

__all__ = ["BrianUnsupported", "SUPPORTED_SOURCES", "REFUSED_SOURCES", "circuit_spec", "decoder_layers"]

SUPPORTED_SOURCES = ("thermal", "mismatch", "feedback_mismatch", "weight_programming")
REFUSED_SOURCES = {
    "shot": "signal-dependent (multiplicative) noise, which Brian2's euler method cannot integrate",
    "flicker": "an OU bank integrated exactly per step, not an Euler-Maruyama SDE",
    "weight_read": "noise drawn per matrix-vector product, not a white-noise SDE term",
    "drift": "time-dependent weights",
    "quantisation": "quantised activities/weights (not a smooth SDE)",
    "saturation": "clipped states/activities",
    "pulsed": "learning on the devices (Brian2 runs inference only)",
}
_ACTS = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.SiLU: "silu"}


class BrianUnsupported(ValueError):
    """The circuit uses something the Brian2 simulator cannot express (the message names it)."""


def decoder_layers(decoder: nn.Module) -> list[tuple[str, str | None, str]]:
    """[(weight name, bias name or None, activation)] of an ``nn.Linear`` or a fully connected ``nn.Sequential``."""
    if type(decoder) is nn.Linear:
        return [("weight", "bias" if decoder.bias is not None else None, "identity")]
    conv = [type(m).__name__ for m in decoder.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if conv or type(decoder) is not nn.Sequential:
        what = f"a convolutional decoder ({conv[0]})" if conv else f"the decoder {type(decoder).__name__}"
        raise BrianUnsupported(f"Brian2 cannot express {what}: use nn.Linear or an nn.Sequential of nn.Linear and "
                               f"elementwise tanh/sigmoid/relu/silu")
    layers: list[list] = []
    for name, m in decoder.named_children():
        if type(m) is nn.Linear:
            layers.append([f"{name}.weight", f"{name}.bias" if m.bias is not None else None, "identity"])
        elif type(m) in _ACTS and layers and layers[-1][2] == "identity":
            layers[-1][2] = _ACTS[type(m)]
        elif type(m) is nn.Identity:
            continue
        else:
            raise BrianUnsupported(f"Brian2 cannot express the decoder's module {name} ({type(m).__name__}): only "
                                   f"nn.Linear each followed by at most one of tanh/sigmoid/relu/silu")
    if not layers:
        raise BrianUnsupported("Brian2 cannot express an empty decoder")
    return [tuple(layer) for layer in layers]


def _refuse_config(cfg, circuit) -> None:
    if cfg.dynamics != "overdamped":   # issue 16: the Brian2 groups hold the overdamped circuit's equations only
        raise BrianUnsupported(f"Brian2 (circuits.brian) cannot express dynamics={cfg.dynamics!r}: only the overdamped "
                               f"circuit; use circuits.Circuit.simulate")
    if cfg.preconditioned:
        raise BrianUnsupported("Brian2 cannot express preconditioning (gain units): the noise amplitude sqrt(2 T G / "
                               "tau_z) depends on the state m, which Brian2's euler method (additive noise) cannot "
                               "integrate; use precondition=None")
    if cfg.record_path is not None:
        raise BrianUnsupported("record_path: the Brian2 simulator keeps its records in memory; use record_path=None")
    names = [b.source.type for b in circuit.sources]
    bad = [t for t in names if t not in SUPPORTED_SOURCES]
    if bad:
        why = REFUSED_SOURCES.get(bad[0], "not supported")
        raise BrianUnsupported(f"Brian2 cannot express noise source {bad[0]!r} ({why}); expressible: "
                               f"{', '.join(SUPPORTED_SOURCES)}")
    for b in circuit.sources:
        if b.source.type == "thermal" and circuit.adiabatic and b.source.params["error_std"] > 0:
            raise BrianUnsupported("Brian2 cannot express thermal error_std with adiabatic error units (noise drawn "
                                   "per evaluation is not an SDE term); use a finite tau_e or error_std=0")


def _per_unit(tau, size: int) -> np.ndarray:
    if isinstance(tau, torch.Tensor):
        return tau.detach().double().cpu().numpy().reshape(size)
    return np.full(size, float(tau))


def _numpy(t) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def circuit_spec(model: GenerativeModel, x: torch.Tensor, config, z0=None, seed: int | None = None) -> dict:
    """The Brian2 spec (``circuits.brian.network``) of ``Circuit(model, config)`` run on x from z0.

    z0: (B, d) tensor, or None / "prior" (drawn from the prior with the generator ``Circuit.simulate`` uses by
    default, so both simulators start from the same state). The error units start settled at e(x, g(z0)), as
    in ``Circuit.simulate``. Raises :class:`BrianUnsupported` (a ValueError) naming what Brian2 cannot express.
    """
    from ..circuit import Circuit
    from ..config import CircuitConfig

    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model must be a neuro_lpc.GenerativeModel, got {type(model).__name__}")
    if not isinstance(config, CircuitConfig):
        raise TypeError(f"config must be a CircuitConfig, got {type(config).__name__}")
    if not isinstance(model.likelihood, GaussianLikelihood):
        raise BrianUnsupported(f"Brian2 cannot express the {type(model.likelihood).__name__}: only a GaussianLikelihood")
    layers = decoder_layers(model.decoder)
    if isinstance(z0, str) and z0 == "encoder":
        raise BrianUnsupported("z0='encoder': pass the initial state as a tensor")
    circuit = Circuit(model, config)
    _refuse_config(config, circuit)
    if len(model.output_shape) != 1:
        raise BrianUnsupported(f"Brian2 needs vector observations, the decoder makes shape {model.output_shape}")
    gen = torch.Generator(device=circuit.device).manual_seed(config.seed)   # as Circuit.simulate's default
    x, z0 = circuit.initial_state(x, z0, gen, None)
    B, d, n = x.shape[0], model.latent_dim, model.output_shape[0]
    with torch.no_grad():
        eps0 = model.error(x, model.decoder(z0))                        # settled at z0 (true model, as torch)
    var_x = float(model.likelihood.sigma.detach()) ** 2
    bogacz = config.error_form == "bogacz"
    ts = circuit.timescales
    tau_z = _per_unit(ts.tau_z, d)
    tau_e = np.zeros(n) if circuit.adiabatic else _per_unit(ts.tau_e, n)
    T = circuit.temperature
    q_z, q_e = np.full(d, 2.0 * T), np.zeros(n)
    gains = {s: (np.ones(k), np.zeros(k)) for s, k in (("value", d), ("prediction", n), ("error", n))}
    for b in circuit.sources:
        p = b.source.params
        if b.source.type == "thermal":
            rel = p["units"] == "relative"
            q_z += 2 * (p["value_std"] * circuit.prior_std) ** 2 if rel else p["value_std"] ** 2 * tau_z
            q_e += 2 * (p["error_std"] * circuit.error_scale) ** 2 if rel else p["error_std"] ** 2 * tau_e
        elif b.source.type == "mismatch":                 # transforms compose in source order: a -> g a + o
            for site in p["sites"]:
                g, o = _numpy(b.frozen[f"{site}_gain"]).ravel(), _numpy(b.frozen[f"{site}_offset"]).ravel()
                g0, o0 = gains[site]
                gains[site] = (g0 * g, o0 * g + o)
    fwd, fb = circuit.effective_weights(0.0)
    L = len(layers)
    spec = {"B": B, "d": d, "n": n, "L": L, "acts": np.array([a for _, _, a in layers]), "dt": float(config.dt),
            "var_p": circuit.prior_std ** 2, "leak": var_x if bogacz else 1.0, "tgt_scale": 1.0 if bogacz else 1 / var_x,
            "adiabatic": bool(circuit.adiabatic), "x": _numpy(x), "z0": _numpy(z0), "eps0": _numpy(eps0),
            "tau_z": tau_z, "q_z": q_z, "tau_e": tau_e, "q_e": q_e,
            "g_v": gains["value"][0], "o_v": gains["value"][1], "g_p": gains["prediction"][0],
            "o_p": gains["prediction"][1], "g_e": gains["error"][0], "o_e": gains["error"][1]}
    sizes = [d]
    separate = False
    for l, (wname, bname, _) in enumerate(layers, start=1):
        W, Wfb = _numpy(fwd[wname]), _numpy(fb[wname])
        spec[f"W{l}"], spec[f"Wfb{l}"] = W, Wfb
        spec[f"b{l}"] = _numpy(fwd[bname]) if bname is not None else np.zeros(W.shape[0])
        separate = separate or not np.array_equal(W, Wfb)
        if W.shape[1] != sizes[-1]:
            raise BrianUnsupported(f"decoder layer {l} expects {W.shape[1]} inputs after {sizes[-1]} units")
        sizes.append(W.shape[0])
    spec["sizes"] = np.array(sizes)
    spec["separate_fb"] = separate
    spec["seed"] = int(config.seed if seed is None else seed) % 2**32     # brian2.seed takes 32 bits
    spec["_circuit"] = circuit          # not exported; used for the Trajectory's attrs
    return spec
