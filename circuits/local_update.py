"""The local pulsed outer-product update of an analog array (learning mode ``in-memory-local``; issue 17 section 2).

Predictive coding's weight update is local (the paper's eq. 8, continuous form in DESIGN.md section 3): for a
layer y = W a (W: out x in) the time-averaged ascent step on log p is

    dW = lr * (1 / (B P)) sum_k sum_b d_kb a_kb^T,        d = d log p / d y  (the precision-weighted error at the
                                                           layer's output, backpropagated through the arrays above)

an outer product of two signals that sit at the array's two edges (a on the columns, d on the rows). An analog
crossbar applies it in place with coincident stochastic pulse trains (Gokmen & Vlasov 2016, "Acceleration of deep
neural network training with resistive cross-point devices"; aihwkit's analog SGD). For one *row* r (one sample b at
one presentation step k; for a convolution one output position: aihwkit's mapping) with per-row rate
eta = lr / (B P) and the device's granularity dw (= dw_min, in weight units):

    BL     = desired_bl (31), or with update_bl_management  BL_r = min(ceil(eta |a|_max |d|_max / dw), desired_bl)
    C      = sqrt(eta / (dw BL_r))                                    (aihwkit ``calculateBlAB``: A = B = C)
    C_a    = C sqrt(d_val / a_val),  C_d = C sqrt(a_val / d_val)       (update_management: balanced probabilities;
             a_val = |a|_max, d_val = |d|_max, scaled by desired_bl / k when k = eta a_val d_val / dw > desired_bl)
    p_a,j  = min(|a_j| C_a, 1),  p_d,i = min(|d_i| C_d, 1)             (a pulse in slot l with probability p)
    n_ij   = sum_l  [D_il A_jl]  coincidences of BL_r slots, sign = sign(d_i) sign(a_j)

Source: aihwkit ``src/rpucuda/rpu_pulsed_meta_parameter.cpp`` (``PulsedUpdateMetaParameter::calculateBlAB``,
``performUpdateManagement``), ``src/rpucuda/sparse_bit_line_maker.cpp`` (``PP > sampleUniform()`` per slot: the
probability saturates at 1), ``src/aihwkit/simulator/parameters/training.py`` (``UpdateParameters``:
``desired_bl=31``, ``update_bl_management=True``, ``update_management=True``, ``fixed_bl=True``).
Marginally n_ij ~ Binomial(BL_r, p_a,j p_d,i), E[n_ij] dw = eta d_i a_j (without saturation) -- the SGD step;
counts on one row share the row's pulse train, so Cov(n_ij, n_ij') = BL p_d,i (1 - p_d,i) p_a,j p_a,j'
(j != j'): update management changes these covariances and not the mean.

The coincidences of every row are summed into up counts (sign +) and down counts (sign -) per device, and each
device applies them through the device model (``circuits.noise.arrays.apply_pulses``: its *own* step
dw_min (g (1 +- up_down) +- r), cycle-to-cycle noise, bounds, soft bounds), up pulses first, then down pulses. So
asymmetry turns into a bias of the update as on the device. No per-weight digital state: a global learning rate
and the pulse statistics are the whole optimiser.

``expected=True`` replaces the coincidence counts by their BL -> inf limit at fixed dw (C^2 BL = eta / dw held,
C -> 0, so no probability saturates): up / down = (eta / dw) sum_r [d_r a_r^T]_+ / [.]_-, rounded to pulses by the
device's rounding. With dw_min -> 0, no asymmetry and no noise the update is then plain SGD. (With drawn trains a
row moves a device by at most BL_r dw: aihwkit's update clipping, which keeps finite BL away from SGD when
eta |a| |d| > BL dw.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .noise.arrays import AnalogArray, apply_pulse_counts, apply_pulses

__all__ = ["PulseUpdateConfig", "row_scales", "coincidences", "layer_rows", "EdgeRecorder", "apply_counts",
           "local_update", "Transfer", "MAPPED_LAYERS"]

MAPPED_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)   # layer types that map onto one array each


@dataclass
class PulseUpdateConfig:
    """The pulse-train statistics of the local update (aihwkit ``UpdateParameters`` defaults).

    desired_bl: pulse-train length (the maximum with ``bl_management``); bl_management: BL_r per row from the
    row's largest product; update_management: balance the two edges' probabilities; expected: the BL -> inf limit's
    counts instead of drawn pulse trains; trains: "drawn" (every slot of every row's trains, exact) or "poisson"
    (each device's up and down counts, summed over the rows, drawn as Poisson(sum_r BL_r q_r), q = p_a p_d: the law
    of rare events for the sum of independent binomials, exact in mean, variance high by sum_r BL_r q_r^2; the
    correlations that a shared train puts between the devices of one row are dropped. For long presentations and
    convolutions, whose rows are B x P x positions: cost two matmuls instead of BL); transfer_every (0 = off),
    transfer_lr, scale_transfer_lr, n_reads_per_transfer: the Tiki-Taka transfer (:class:`Transfer`; aihwkit
    ``TransferCompound`` defaults 1 / 1.0 / True / 1); chunk: slots x lines per batch of drawn pulses (memory bound).
    """

    desired_bl: int = 31
    bl_management: bool = True
    update_management: bool = True
    expected: bool = False
    trains: str = "drawn"
    transfer_every: int = 0
    transfer_lr: float = 1.0
    scale_transfer_lr: bool = True
    n_reads_per_transfer: int = 1
    chunk: int = 4_000_000

    TRAINS = ("drawn", "poisson")

    def validate(self) -> "PulseUpdateConfig":
        if isinstance(self.desired_bl, bool) or not isinstance(self.desired_bl, int) or self.desired_bl < 1:
            raise ValueError(f"local update: desired_bl must be a positive integer, got {self.desired_bl!r}")
        if self.trains not in self.TRAINS:
            raise ValueError(f"local update: trains must be one of {self.TRAINS}, got {self.trains!r}")
        for name in ("transfer_every", "n_reads_per_transfer", "chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "transfer_every" else 1):
                raise ValueError(f"local update: {name} must be an integer >= {0 if name == 'transfer_every' else 1}, "
                                 f"got {v!r}")
        v = self.transfer_lr
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < float("inf")):
            raise ValueError(f"local update: transfer_lr must be a positive finite number, got {v!r}")
        for name in ("bl_management", "update_management", "expected", "scale_transfer_lr"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"local update: {name} must be true/false, got {getattr(self, name)!r}")
        return self


def row_scales(a: torch.Tensor, d: torch.Tensor, eta: float, dw: float, cfg: PulseUpdateConfig):
    """(BL_r (R,) long, C_a (R, 1), C_d (R, 1)) of each row (module docstring; aihwkit ``performUpdateManagement``).
    Rows with a zero edge get BL_r = 0 (no pulses, as aihwkit)."""
    a_val = a.abs().amax(1)
    d_val = d.abs().amax(1)
    bl_max = cfg.desired_bl
    k = eta * a_val * d_val / dw
    if cfg.bl_management:
        bl = torch.ceil(k).clamp(max=bl_max)
    else:
        bl = torch.full_like(k, float(bl_max))
    bl = torch.where((a_val == 0) | (d_val == 0), torch.zeros_like(bl), bl)
    c = torch.sqrt(eta / (dw * bl.clamp(min=1)))
    ca, cd = c, c
    if cfg.update_management:
        dv = torch.where(k > bl_max, d_val * bl_max / k.clamp(min=1e-300), d_val)
        ratio = torch.sqrt(a_val.clamp(min=1e-300) / dv.clamp(min=1e-300))
        ca, cd = c / ratio, c * ratio
    return bl.long(), ca[:, None], cd[:, None]


def coincidences(a: torch.Tensor, d: torch.Tensor, eta: float, dw: float, cfg: PulseUpdateConfig,
                 gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) coincidence counts (out x in) of the rows a (R x in), d (R x out): drawn pulse trains, or with
    ``cfg.expected`` the BL -> inf limit at fixed dw, (eta / dw) sum_r [d_r a_r^T]_+- (never saturated). Drawn:
    E[up - down] dw = eta d^T a where no probability saturates (a row's update is at most BL_r dw per device)."""
    if a.dim() != 2 or d.dim() != 2 or a.shape[0] != d.shape[0]:
        raise ValueError(f"coincidences: a (R x in) and d (R x out) must share R rows, got {tuple(a.shape)} and "
                         f"{tuple(d.shape)}")
    if cfg.expected:       # BL -> inf at fixed dw (C^2 BL = eta / dw, C -> 0): no probability ever saturates
        net = (eta / dw) * (d.T @ a)
        tot = (eta / dw) * (d.abs().T @ a.abs())
        return (tot + net) / 2, (tot - net) / 2
    bl, ca, cd = row_scales(a, d, eta, dw, cfg)
    pa, pd = (a.abs() * ca).clamp(max=1), (d.abs() * cd).clamp(max=1)
    sa, sd = torch.sign(a), torch.sign(d)
    if cfg.trains == "poisson":
        return _poisson_counts(pa, pd, sa, sd, bl.to(a.dtype)[:, None], gen)
    net = a.new_zeros(d.shape[1], a.shape[1])
    tot = torch.zeros_like(net)
    kw = dict(generator=gen, dtype=a.dtype, device=a.device)
    # rows grouped by their train length BL_r (bl management makes most rows short): each group draws exactly its
    # BL_r slots per row -- sum_r BL_r (in + out) uniforms, not rows x max BL
    for L in torch.unique(bl).tolist():
        if L == 0:
            continue                                     # a row with a zero edge sends no pulses
        rows = torch.nonzero(bl == L).flatten()
        step = max(1, cfg.chunk // max(L * (a.shape[1] + d.shape[1]), 1))
        for s in range(0, rows.numel(), step):
            idx = rows[s:s + step]
            r = idx.numel()
            A = (torch.rand(r, L, a.shape[1], **kw) < pa[idx, None, :]).to(a.dtype).reshape(-1, a.shape[1])
            D = (torch.rand(r, L, d.shape[1], **kw) < pd[idx, None, :]).to(a.dtype).reshape(-1, d.shape[1])
            net += (D * sd[idx].repeat_interleave(L, 0)).T @ (A * sa[idx].repeat_interleave(L, 0))
            tot += D.T @ A
    return (tot + net) / 2, (tot - net) / 2


def _poisson_counts(pa, pd, sa, sd, bl, gen):
    """Up / down counts ~ Poisson(sum_r BL_r q_r) per device and sign, q = p_d p_a (``PulseUpdateConfig.trains`` =
    "poisson"): the sum over rows of independent Binomial(BL_r, q_r) by the law of rare events (Le Cam 1960: total
    variation <= sum_r BL_r q_r^2); exact mean, variance sum BL q instead of sum BL q (1 - q)."""
    x = bl * pd
    tot = x.T @ pa                                  # sum_r BL q over both signs
    net = (x * sd).T @ (pa * sa)                    # sum_r BL q sign: up - down
    return torch.poisson(((tot + net) / 2).clamp(min=0), generator=gen), \
        torch.poisson(((tot - net) / 2).clamp(min=0), generator=gen)


# ================================================================================ layer mapping ====

def layer_rows(module: nn.Module, a_in: torch.Tensor, d_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows (column edge, row edge) of a layer's array, the weight viewed as a matrix M (aihwkit's mapping):

    Linear: M = W (out x in), rows (a, d);
    Conv2d: M = W.view(C_out, C_in k k), rows per output position (unfold(a) patch, d at the position);
    ConvTranspose2d: M = W.view(C_in, C_out k k) (it is the adjoint of the conv with that kernel), rows per *input*
    position (unfold(d) patch with the layer's stride / padding / dilation, a at the position).
    sum_rows d_r a_r^T is then the weight gradient <d, layer(a)> viewed as M (tested against autograd)."""
    if isinstance(module, nn.Linear):
        return a_in.reshape(-1, a_in.shape[-1]), d_out.reshape(-1, d_out.shape[-1])
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ValueError(f"in-memory-local maps convolutions with groups=1, numeric zero padding only; got "
                             f"groups={module.groups}, padding={module.padding!r}, "
                             f"padding_mode={module.padding_mode!r}")
        kw = dict(kernel_size=module.kernel_size, dilation=module.dilation, padding=module.padding,
                  stride=module.stride)
        if isinstance(module, nn.Conv2d):
            patches = F.unfold(a_in, **kw)                        # (B, C_in k k, L)
            return patches.transpose(1, 2).reshape(-1, patches.shape[1]), d_out.flatten(2).transpose(1, 2).reshape(
                -1, d_out.shape[1])
        patches = F.unfold(d_out, **kw)                           # (B, C_out k k, H_in W_in)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1]), a_in.flatten(2).transpose(1, 2).reshape(
            -1, a_in.shape[1])
    raise ValueError(f"in-memory-local maps {', '.join(t.__name__ for t in MAPPED_LAYERS)} layers onto arrays; "
                     f"{type(module).__name__} is not mapped")


def check_mapped(decoder: nn.Module, names) -> dict[str, tuple[str, nn.Module]]:
    """name -> (kind "weight" | "bias", module) of each array-covered parameter; one-line error for an unmapped
    layer."""
    modules = dict(decoder.named_modules())
    out = {}
    for n in names:
        mod_name, _, kind = n.rpartition(".")
        m = modules.get(mod_name)
        if not isinstance(m, MAPPED_LAYERS) or kind not in ("weight", "bias"):
            raise ValueError(f"in-memory-local maps {', '.join(t.__name__ for t in MAPPED_LAYERS)} weights onto "
                             f"arrays; "
                             f"{n!r} belongs to a {type(m).__name__}, which is not mapped")
        out[n] = (kind, m)
    return out


class EdgeRecorder:
    """Records the edge signals of the mapped layers during a presentation: each forward's layer input a (a forward
    hook) and the cotangent d at its output when the learning backward runs (a tensor hook; the last backward
    through that output wins: the parameter-gradient pass). Only while ``armed`` (around the circuit's run)."""

    def __init__(self, layers: dict[str, tuple[str, nn.Module]]):
        self.modules = {id(m): m for _, m in layers.values()}
        self.records: dict[int, list] = {k: [] for k in self.modules}
        self.handles = []
        self.armed = False

    def __enter__(self):
        for k, m in self.modules.items():
            self.handles.append(m.register_forward_hook(self._hook(k)))
        self.armed = True
        return self

    def __exit__(self, *exc):
        self.armed = False
        for h in self.handles:
            h.remove()
        self.handles = []

    def _hook(self, key):
        def hook(module, inputs, output):
            if not self.armed or not output.requires_grad:
                return
            rec = [inputs[0].detach().clone(), None]   # clone: the state is updated in place
            self.records[key].append(rec)

            def grab(g, rec=rec):
                rec[1] = g.detach().clone()
            output.register_hook(grab)
        return hook

    def rows(self, module: nn.Module, kind: str = "weight") -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(a rows, d rows, number of presentation steps recorded, batch size) of one layer's weight (records with a
        backward only); for its bias the column edge is a constant 1 and the rows are d at every output position."""
        recs = [(a, d) for a, d in self.records[id(module)] if d is not None]
        if not recs:
            raise ValueError(f"no learning signals were recorded for {type(module).__name__}: the presentation ran no "
                             f"parameter-gradient pass through it")
        if kind == "bias":
            rows = [(None, d.flatten(2).transpose(1, 2).reshape(-1, d.shape[1]) if d.dim() > 2 else
                     d.reshape(-1, d.shape[-1])) for _, d in recs]
            rows = [(r.new_ones(r.shape[0], 1), r) for _, r in rows]
        else:
            rows = [layer_rows(module, a, d) for a, d in recs]
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]), len(recs), recs[0][1].shape[0]

    def clear(self) -> None:
        for v in self.records.values():
            v.clear()


# ================================================================================ the write ====

def apply_counts(array: AnalogArray, name: str, up: torch.Tensor, down: torch.Tensor,
                 gen: torch.Generator | None, integral: bool | None = None) -> None:
    """Apply ``up`` / ``down`` pulse counts (device units, shaped as the parameter) to the devices of ``name``:
    each device moves by its own steps (``apply_pulses``: noise, bounds, soft bounds), up pulses first. Devices that
    received a pulse restart their drift clock (as ``AnalogArray.pulse_update``)."""
    if integral is None:     # the caller may know (drawn / Poisson counts are integers, expected ones are not)
        integral = bool(torch.equal(up, up.round()) and torch.equal(down, down.round()))
    dev = dataclasses.replace(array.pulsed, max_pulses=None)
    sc = array.scale[name]
    u = array.stored[name] / sc
    hi, lo = array.w_hi.get(name), array.w_lo.get(name)
    su, sdn = array.step_up[name], array.step_down[name]
    if integral:      # drawn / Poisson counts: sent as they are (no rounding draw)
        u, n_up = apply_pulse_counts(u, up, su, dev, gen, hi, lo)
        u, n_dn = apply_pulse_counts(u, -down, sdn, dev, gen, hi, lo)
    else:             # expected counts: rounded to pulses by the device's rule
        su_t = torch.as_tensor(su, dtype=u.dtype).expand_as(u)
        sd_t = torch.as_tensor(sdn, dtype=u.dtype).expand_as(u)
        u, n_up = apply_pulses(u, up * su_t, dev, su, sdn, gen, hi, lo)
        u, n_dn = apply_pulses(u, -down * sd_t, dev, su, sdn, gen, hi, lo)
    array.stored[name] = u * sc
    hit = (n_up != 0) | (n_dn != 0)
    array.t_write[name] = torch.where(hit, torch.full_like(u, array.clock), array.t_write[name])
    array._draw_one_over_f({name: hit})


def local_update(array: AnalogArray, recorder: EdgeRecorder, layers: dict[str, tuple[str, nn.Module]], lr: float,
                 cfg: PulseUpdateConfig, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
    """One presentation's local update of every array-covered parameter: eta = lr / (B P) per row (B chains, P recorded
    steps: the time average of discrete LPC's theta-gradient, ``neuro_lpc.train``), the coincidences
    of the recorded edges (``coincidences``), written by pulses (``apply_counts``). Returns name -> net counts."""
    if array.pulsed is None:
        raise ValueError("in-memory-local needs a 'pulsed' weight-device source")
    out = {}
    for name, (kind, m) in layers.items():
        a, d, steps, batch = recorder.rows(m, kind)
        eta = float(lr) / (batch * steps)
        dw = array.pulsed.dw_min * array.scale[name]          # the nominal step in weight units
        up, down = coincidences(a, d, eta, dw, cfg, gen)
        shape = array.stored[name].shape
        up, down = up.reshape(shape), down.reshape(shape)
        apply_counts(array, name, up, down, gen, integral=not cfg.expected)
        out[name] = up - down
    array.writes += 1
    recorder.clear()
    return out


# ================================================================================ Tiki-Taka ====

class Transfer:
    """Tiki-Taka (v1) transfer between a fast and a slow array (Gokmen & Haensch 2020, "Algorithm for training neural
    networks on resistive device arrays", Front. Neurosci. 14:103; aihwkit ``TransferCompound`` with ``gamma = 0``,
    ``transfer_columns``, ``units_in_mbatch``).

    The local updates go to the *fast* array A (its own devices: same pulsed device, its own device-to-device draws,
    starting at 0); the circuit reads the *slow* array C (gamma = 0: W = C). Every ``transfer_every`` presentations
    ``n_reads_per_transfer`` columns of A (cyclically; a column of the weight viewed as the matrix of
    :func:`layer_rows`, i.e. ``w.reshape(shape[0], -1)``) are read (noise-free) and written onto C by the same pulsed
    outer-product rule with the one-hot column as the column edge and the read as the row edge:
    C[:, j] += eta_t A[:, j], eta_t = transfer_lr (x lr with ``scale_transfer_lr``). A is not reset. Asymmetric
    devices bias A's updates; the transfer passes on A's low-pass filtered content (the paper's argument: with
    soft-bounds devices A hovers about its symmetry point).
    """

    def __init__(self, slow: AnalogArray, seed: int):
        weights = {n: slow.stored[n] for n in slow.names}
        self.fast = AnalogArray(weights, pulsed=slow.pulsed, include_bias=slow.bias_families, seed=seed)
        for n in self.fast.names:
            self.fast.scale[n] = slow.scale[n]
            self.fast.stored[n] = torch.zeros_like(slow.stored[n])
        self.column = {n: 0 for n in self.fast.names}
        self.count = 0

    def step(self, slow: AnalogArray, cfg: PulseUpdateConfig, lr: float, gen: torch.Generator | None) -> None:
        """One presentation done: transfer when due (class docstring)."""
        self.count += 1
        if cfg.transfer_every == 0 or self.count % cfg.transfer_every:
            return
        eta = cfg.transfer_lr * (float(lr) if cfg.scale_transfer_lr else 1.0)
        for n in slow.names:
            shape = slow.stored[n].shape
            m = self.fast.stored[n].reshape(shape[0], -1)
            for _ in range(cfg.n_reads_per_transfer):
                j = self.column[n]
                a = m.new_zeros(1, m.shape[1])
                a[0, j] = 1.0
                up, down = coincidences(a, m[:, j][None, :], eta, slow.pulsed.dw_min * slow.scale[n], cfg, gen)
                apply_counts(slow, n, up.reshape(shape), down.reshape(shape), gen)
                self.column[n] = (j + 1) % m.shape[1]
        slow.writes += 1

    def state_dict(self) -> dict:
        return {"fast": self.fast.state_dict(), "column": dict(self.column), "count": self.count}

    def load_state_dict(self, sd: dict) -> None:
        self.fast.load_state_dict(sd["fast"])
        self.column, self.count = dict(sd["column"]), int(sd["count"])
