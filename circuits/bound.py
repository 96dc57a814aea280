"""The circuit bound to a model: everything a run needs that can be built before it (no integrator here).

:class:`BoundCircuit` validates the config against the model, resolves the device and dtype, draws the per-unit
time constants, binds the noise sources (their frozen draws from ``config.seed``), programs the analog array
when weight-device sources are on and collects the sources' hooks once.  The layers above read it and never
call back up: ``circuits.run`` (one run's state and kernel), ``circuits.stability`` (the dt check),
``circuits.integrate`` / ``circuits.fast`` (the loops); ``circuits.circuit.Circuit`` adds the dt check and the
public ``simulate`` entry points on top of it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from neuro_lpc.likelihoods import GaussianLikelihood
from neuro_lpc.model import GenerativeModel

from .config import CircuitConfig
from .noise import CircuitContext
from .noise.arrays import AnalogArray
from .timescales import Timescales, derive_seed
from .units import ErrorForm, error_form

__all__ = ["BoundCircuit", "HOOK_NAMES"]

# the hooks a bound noise source may implement (circuits.noise.base.BoundSource), collected once per circuit
HOOK_NAMES = ("value_transform", "prediction_transform", "error_transform", "weight_static", "weight_dynamic",
              "feedback_static", "pre_step", "value_increment", "error_increment", "state_clip", "record")


def _error_scale(likelihood) -> float:
    """Natural scale of the error units: 1/sigma for (discretised) Gaussians, 1 otherwise."""
    sigma = getattr(likelihood, "sigma", None)
    if sigma is None:
        return 1.0
    return 1.0 / float(sigma.detach() if isinstance(sigma, torch.Tensor) else sigma)


class BoundCircuit:
    """A ``neuro_lpc.GenerativeModel`` bound to a :class:`CircuitConfig` (see the module docstring).

    Attributes: ``model``, ``config``, ``device``, ``dtype``, ``noise`` (NoiseModel), ``temperature``,
    ``timescale_model``, ``timescales`` (per-unit, on the device), ``error_form`` (the error units' constants,
    ``circuits.units.ErrorForm``), ``linear_decoder``, ``gaussian``, ``prior_std``, ``error_scale``, ``context``,
    ``sources`` (the bound noise sources that act), ``hooks`` (their hooks by name), ``array`` (the analog array
    holding the decoder's weights, or None), ``frozen`` (every frozen draw by name), ``state`` (the final state of
    the last run, set by the entry points that own it).
    """

    def __init__(self, model: GenerativeModel, config: CircuitConfig | None = None, *, array: AnalogArray | None = None,
                 noise_state: dict | None = None, frozen_cache: dict | None = None, **overrides):
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a neuro_lpc.GenerativeModel, got {type(model).__name__}")
        config = dataclasses.replace(config or CircuitConfig(), **overrides) if overrides else (config or CircuitConfig())
        self.config = config.validate()
        self.model = model
        self.device, self.dtype = self._resolve_device(model, config)
        self.noise = config.noise_model()
        self.temperature = config.resolved_temperature()
        self.timescale_model = config.timescale_model()
        self.linear_decoder = type(model.decoder) is nn.Linear
        self.gaussian = isinstance(model.likelihood, GaussianLikelihood)
        if config.error_form == "bogacz" and not self.gaussian:
            raise ValueError("error_form='bogacz' (precision as the error unit's leak) needs a GaussianLikelihood, "
                             f"got {type(model.likelihood).__name__}; use error_form='error'")
        sigma_x = float(model.likelihood.sigma.detach()) if self.gaussian else None
        self.error_form: ErrorForm = error_form(config.error_form, sigma_x)
        ts = self.timescale_model.build(config.tau_z, config.tau_e, config.gain_tau(), model.latent_dim,
                                        model.output_shape, seed=config.seed)
        self.timescales: Timescales = ts.to(self.device, self.dtype)
        self.prior_std = float(model.prior_std)
        self.error_scale = _error_scale(model.likelihood)
        frozen_gen = torch.Generator().manual_seed(derive_seed(config.seed, 2))
        self.context = CircuitContext(
            latent_dim=model.latent_dim, obs_shape=tuple(model.output_shape), device=self.device, dtype=self.dtype,
            dt=float(config.dt), timescales=self.timescales, temperature=self.temperature, prior_std=self.prior_std,
            error_scale=self.error_scale, weights={n: w.detach() for n, w in model.decoder.named_parameters()},
            frozen_gen=frozen_gen, noise_state=noise_state, frozen_cache=frozen_cache)
        self.sources = self.noise.bind(self.context)
        self.array = array
        if array is None and any(b.weight_device for b in self.sources):
            self.array = AnalogArray.from_noise(dict(model.decoder.named_parameters()), self.noise.sources,
                                                seed=config.seed, program_gen=frozen_gen)
        # hooks collected once: a source with nothing to do costs nothing per step
        self.hooks = {name: [getattr(b, name) for b in self.sources if getattr(b, name) is not None]
                      for name in HOOK_NAMES}
        self.frozen = self._frozen_draws()
        self.dynamics = config.dynamics
        self.skew, self.mass = self._resolve_dynamics()
        self.state: dict[str, Any] | None = None

    def _resolve_dynamics(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(J (d, d) or None, M's diagonal (d,) or None) of the value units' family (``neuro_lpc.dynamics``).

        "optimal" (Lelievre, Nier & Pavliotis 2013) needs the posterior precision P: for an ``nn.Linear`` decoder
        with a Gaussian likelihood the exact P = W^T W / sigma_x^2 + I / s_p^2 (the same for every x); for any other
        decoder with a Gaussian likelihood the Gauss-Newton precision linearised at the prior mean z = 0,
        P = J_g(0)^T J_g(0) / sigma_x^2 + I / s_p^2 (one J for all x; docs/circuits_dynamics.md)."""
        cfg, d = self.config, self.model.latent_dim
        from neuro_lpc.dynamics import mass_vector, skew_matrix
        mass = mass_vector(cfg.mass, d, dtype=self.dtype, device=self.device) if cfg.dynamics == "underdamped" else None
        if cfg.dynamics != "nonreversible" or cfg.skew is None:
            return None, mass
        where = f"CircuitConfig: skew for latent dimension {d}"
        if isinstance(cfg.skew, torch.Tensor) and tuple(cfg.skew.shape) != (d, d):
            raise ValueError(f"{where} must have shape ({d}, {d}), got {tuple(cfg.skew.shape)}")
        precision = self._linearised_precision() if (isinstance(cfg.skew, str) and cfg.skew == "optimal") else None
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 16))
        J = skew_matrix(cfg.skew if not isinstance(cfg.skew, torch.Tensor) else cfg.skew.detach(), d,
                        scale=float(cfg.skew_scale), precision=precision, generator=gen, dtype=torch.float64)
        return J.to(self.device, self.dtype), mass

    def _linearised_precision(self) -> torch.Tensor:
        """P = J_g(0)^T J_g(0) / sigma_x^2 + I / s_p^2 (float64, CPU); exact for an nn.Linear decoder."""
        if not self.gaussian:
            raise ValueError("CircuitConfig: skew='optimal' needs a GaussianLikelihood (its precision is the "
                             f"Gauss-Newton one), got {type(self.model.likelihood).__name__}; use skew='random'")
        d, var_x = self.model.latent_dim, float(self.model.likelihood.sigma.detach()) ** 2
        if self.linear_decoder:
            Jg = self.model.decoder.weight.detach().double().cpu()
        else:
            z0 = torch.zeros(1, d, device=self.device, dtype=self.dtype)
            Jg = torch.autograd.functional.jacobian(lambda z: self.model.decoder(z).reshape(-1), z0)
            Jg = Jg.reshape(-1, d).detach().double().cpu()
        return Jg.T @ Jg / var_x + torch.eye(d, dtype=torch.float64) / self.prior_std**2

    @staticmethod
    def _resolve_device(model, config) -> tuple[torch.device, torch.dtype]:
        p = next(model.parameters(), None)
        model_device = p.device if p is not None else torch.device("cpu")
        device = torch.device(config.device) if config.device is not None else model_device
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if model_device != device:
            raise ValueError(f"the model is on {model_device} but the circuit runs on {device}: "
                             f"move the model first (model.to('{device}'))")
        return device, (p.dtype if p is not None else torch.get_default_dtype())

    def _frozen_draws(self) -> dict[str, torch.Tensor]:
        frozen = {f"{b.source.type}[{i}].{k}": v for i, b in enumerate(self.sources) for k, v in b.frozen.items()
                  if isinstance(v, torch.Tensor)}
        if self.array is not None:
            for n in self.array.names:
                frozen[f"array.programmed.{n}"] = self.array.stored[n]
                if n in self.array.nu:
                    frozen[f"array.nu.{n}"] = self.array.nu[n]
        return frozen

    # ------------------------------------------------------------------ properties
    @property
    def adiabatic(self) -> bool:
        return self.timescales.adiabatic

    @property
    def preconditioned(self) -> bool:
        return self.config.preconditioned

    @property
    def uniform_timescales(self) -> bool:
        ts = self.timescales
        return not any(isinstance(t, torch.Tensor) for t in (ts.tau_z, ts.tau_e, ts.tau_m))

    def attrs(self, **extra) -> dict:
        """The run attributes stored with every trajectory / recording."""
        return {"config": self.config.to_dict(), "noise_model": self.noise.to_dict(), "seed": self.config.seed,
                "dt": float(self.config.dt), "temperature": self.temperature,
                "timescale_model": self.timescale_model.to_dict(), "adiabatic": self.adiabatic,
                "latent_dim": self.model.latent_dim, **extra}

    # -------------------------------------------------------------------- inputs
    def initial_state(self, x: torch.Tensor, z0, generator: torch.Generator | None,
                      encoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated (x, z0) on the circuit's device/dtype (see ``Circuit.simulate``)."""
        model = self.model
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        x = x.to(self.device, self.dtype)
        model.check_inputs(x)
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        z0 = self._initial_z(x, z0, generator, encoder)
        model.check_inputs(x, z0)
        if not torch.isfinite(z0).all():
            raise ValueError("z0 contains NaN or inf")
        return x, z0.clone()

    def _initial_z(self, x, z0, generator, encoder) -> torch.Tensor:
        """z0 from the prior (None / "prior"), the encoder ("encoder": a reparameterised sample) or a tensor."""
        B, d = x.shape[0], self.model.latent_dim
        if z0 is None or (isinstance(z0, str) and z0 == "prior"):
            return self.prior_std * torch.randn((B, d), generator=generator, device=self.device, dtype=self.dtype)
        if isinstance(z0, str) and z0 == "encoder":
            if encoder is None:
                raise ValueError("z0='encoder' needs encoder= (a module returning (mean, var))")
            with torch.no_grad():
                out = encoder(x)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ValueError("encoder(x) must return (mean, var)")
            mean, var = (o.detach().to(self.device, self.dtype) for o in out)
            return mean + var.sqrt() * torch.randn(mean.shape, generator=generator, device=self.device, dtype=self.dtype)
        if isinstance(z0, str):
            raise ValueError(f"z0 must be a tensor, None, 'prior' or 'encoder', got {z0!r}")
        if isinstance(z0, torch.Tensor):
            return z0.detach().to(self.device, self.dtype)
        raise TypeError(f"z0 must be a tensor, None, 'prior' or 'encoder', got {type(z0).__name__}")

    def make_generator(self, generator: torch.Generator | None) -> torch.Generator:
        """The run's random stream: ``generator`` checked, or a new one seeded with ``config.seed``."""
        if generator is None:
            return torch.Generator(device=self.device).manual_seed(self.config.seed)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != self.device.type:
            raise ValueError(f"generator is on {generator.device} but the circuit runs on {self.device}")
        return generator
