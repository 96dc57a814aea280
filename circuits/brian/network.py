"""The LPC circuit as a Brian2 network, built from a plain "spec" (numpy arrays and numbers only).

This module imports nothing but numpy and brian2, so that ``export_brian2`` can copy its source into a
standalone script (``circuits.brian.export``). The spec is made from a torch model and a CircuitConfig by
``circuits.brian.spec.circuit_spec``; its keys are listed in :data:`SPEC_KEYS`.

Equations (Ito form, one copy of the circuit per chain; DESIGN.md section 3, ``circuits.circuit``)::

    tau_z dz   = [ J_fb(z_o)^T eps_fb - z / s_p^2 ] dt + sqrt(q_z tau_z) dW          z_o = g_v z + o_v
    tau_e deps = [ c (x - mu_s) - leak eps ] dt + sqrt(q_e tau_e) dW'                 (tau_e > 0)
    eps        = c (x - mu_s) / leak                                                  (tau_e = 0, adiabatic)
    mu_s = g_p mu + o_p,  mu = g(z_o),  eps_fb = g_e eps + o_e

with (c, leak) = (1 / sigma_x^2, 1) for error form "error" and (1, sigma_x^2) for "bogacz"; q = sigma^2 tau
is the squared noise amplitude per unit in units of 1/tau (2 T for the intrinsic Langevin noise, plus
the thermal sources), so the Brian2 term is ``sqrt(q / tau) * xi`` (xi in s^-1/2). g and o are frozen
per-unit gains and offsets (mismatch; 1 and 0 without it). The decoder g is a chain of L fully connected
layers a_l = W_l h_{l-1} + b_l, h_l = f_l(a_l) (h_0 = z_o, h_L = mu); the feedback J_fb^T eps_fb is the
backward pass delta_L = f_L'(a'_L) eps_fb, delta_{l-1} = f'_{l-1}(a'_{l-1}) (W'_l^T delta_l), J^T eps_fb =
W'_1^T delta_1 through the feedback weights W' (equal to W unless the feedback path is mismatched, in
which case a' is the feedback copy's own forward pass, as ``torch.autograd`` through the feedback copy).

Brian2 objects: value units (B d neurons), one group per hidden layer (B h_l), error units (B n); neuron
c * size + k is unit k of chain c. Every product W h is a ``(summed)`` variable of a ``Synapses`` object
wired within a chain only. One step is exact Euler-Maruyama from the old state: the summed-variable
updaters run in the "groups" slot in the order forward layer 1..L, backward layer L..1, and only then the
state updaters of the value and error units (their ``order`` is 2L + 2), so every drift is formed from the
state at the start of the step. ``method="euler"`` is Euler-Maruyama: the noise is additive (its amplitude
is a per-unit constant), for which Ito and Stratonovich agree and Brian2's "euler" is exact EM.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATIONS", "SPEC_KEYS", "build_network", "run_network", "summary_statistics", "record_rows"]

# name -> (f(a), f'(a)) as Brian2 expressions of a placeholder A (same conventions as torch: relu'(0) = 0)
ACTIVATIONS = {
    "identity": ("(A)", "1.0"),
    "tanh": ("tanh(A)", "(1.0 - tanh(A)**2)"),
    "sigmoid": ("(1.0 / (1.0 + exp(-(A))))", "(exp(-(A)) / (1.0 + exp(-(A)))**2)"),
    "relu": ("clip(A, 0.0, inf)", "int((A) > 0)"),
    "silu": ("((A) / (1.0 + exp(-(A))))", "((1.0 + exp(-(A)) + (A) * exp(-(A))) / (1.0 + exp(-(A)))**2)"),
}

SPEC_KEYS = ("B", "d", "n", "L", "sizes", "acts", "dt", "var_p", "leak", "tgt_scale", "adiabatic", "separate_fb",
             "x", "z0", "eps0", "tau_z", "q_z", "tau_e", "q_e", "g_v", "o_v", "g_p", "o_p", "g_e", "o_e")
# plus W1..WL, b1..bL (forward) and Wfb1..WfbL (feedback) per layer


def _f(act, var):
    return ACTIVATIONS[str(act)][0].replace("A", var)


def _fp(act, var):
    return ACTIVATIONS[str(act)][1].replace("A", var)


def _layer_equations(act, separate_fb, is_output):
    """Equations shared by a hidden layer group and the error group: a = a_raw + b, f(a), the feedback's f'(a')."""
    eqs = ["a_raw : 1", "bias : 1 (constant)", "a = a_raw + bias : 1", f"h = {_f(act, 'a')} : 1"]
    if separate_fb:
        eqs += ["afb_raw : 1", "afb = afb_raw + bias : 1", f"hfb = {_f(act, 'afb')} : 1"]
    a_fb = "afb" if separate_fb else "a"
    incoming = "eps_fb" if is_output else "g_raw"
    if not is_output:
        eqs.append("g_raw : 1")
    eqs.append(f"delta = {_fp(act, a_fb)} * {incoming} : 1")
    return eqs


def build_network(spec, record_every=1, codeobj_class=None, record=True):
    """Build (not run) the network of ``spec``. Returns ``(network, groups, monitors)``.

    groups: {"value", "error", "hidden": [...]}; monitors: {"z"} and {"eps"} when tau_e > 0 (StateMonitors in
    the "start" slot every ``record_every`` steps). ``codeobj_class`` pins a runtime code target on every
    object (None: Brian2's ``prefs.codegen.target`` / the active device, e.g. cpp_standalone).
    """
    import brian2 as b2

    B, L = int(spec["B"]), int(spec["L"])
    sizes = [int(s) for s in spec["sizes"]]          # [d, h_1, ..., h_{L-1}, n]
    acts = [str(a) for a in spec["acts"]]             # activation of layers 1..L
    adiabatic, separate_fb = bool(spec["adiabatic"]), bool(spec["separate_fb"])
    dt = float(spec["dt"]) * b2.second
    kw = {"dt": dt}
    if codeobj_class is not None:
        kw["codeobj_class"] = codeobj_class
    ns = {"var_p": float(spec["var_p"]), "leak": float(spec["leak"]), "tgt_scale": float(spec["tgt_scale"])}
    value = _value_group(b2, spec, ns, kw)
    hidden = _hidden_groups(b2, spec, sizes, acts, ns, kw)
    error = _error_group(b2, spec, acts, ns, kw)
    layers = [value] + hidden + [error]
    synapses = _layer_synapses(b2, spec, layers, sizes, ns, kw)
    _set_parameters_and_state(spec, layers, B, adiabatic, b2.second)
    monitors = _state_monitors(b2, value, error, record_every, dt, codeobj_class, adiabatic) if record else {}
    net = b2.Network(*layers, *synapses, *monitors.values())
    return net, {"value": value, "error": error, "hidden": hidden}, monitors


def _state_order(spec):
    """The execution slot of the value and error units' state updates: after the forward (1..L) and backward
    (L+1..2L) synaptic sums."""
    return 2 * int(spec["L"]) + 2


def _value_group(b2, spec, ns, kw):
    """The B * d value units: dz/dt = (fb - z / var_p) / tau_z (+ sqrt(q_z / tau_z) xi_z); output zo = g_v z + o_v."""
    noisy_z = bool(np.any(np.asarray(spec["q_z"]) > 0))
    value_eqs = ["dz/dt = (fb - z / var_p) / tau_z" + (" + sqrt(q_z / tau_z) * xi_z" if noisy_z else "") + " : 1",
                 "fb : 1", "tau_z : second (constant)", "q_z : 1 (constant)", "g_v : 1 (constant)",
                 "o_v : 1 (constant)", "zo = g_v * z + o_v : 1"]
    return b2.NeuronGroup(int(spec["B"]) * int(spec["d"]), "\n".join(value_eqs), method="euler",
                          order=_state_order(spec), namespace=ns, name="value_units*", **kw)


def _hidden_groups(b2, spec, sizes, acts, ns, kw):
    """The decoder's hidden layers 1..L-1 (B * h_l units each; no state of their own)."""
    B, L = int(spec["B"]), int(spec["L"])
    hidden = []
    for l in range(1, L):
        eqs = _layer_equations(acts[l - 1], bool(spec["separate_fb"]), is_output=False)
        hidden.append(b2.NeuronGroup(B * sizes[l], "\n".join(eqs), method="euler", order=0, namespace=ns,
                                     name=f"hidden{l}_units*", **kw))
    return hidden


def _error_group(b2, spec, acts, ns, kw):
    """The B * n error units (the output layer L): target = tgt_scale (x - mu_s), mu_s = g_p h + o_p;
    eps = target / leak (adiabatic) or deps/dt = (target - leak eps) / tau_e (+ sqrt(q_e / tau_e) xi_e);
    feedback output eps_fb = g_e eps + o_e."""
    L = int(spec["L"])
    noisy_e = bool(np.any(np.asarray(spec["q_e"]) > 0))
    err_eqs = _layer_equations(acts[L - 1], bool(spec["separate_fb"]), is_output=True)
    err_eqs += ["x_in : 1 (constant)", "g_p : 1 (constant)", "o_p : 1 (constant)", "g_e : 1 (constant)",
                "o_e : 1 (constant)", "mu_s = g_p * h + o_p : 1", "target = tgt_scale * (x_in - mu_s) : 1",
                "eps_fb = g_e * eps + o_e : 1"]
    if bool(spec["adiabatic"]):
        err_eqs.append("eps = target / leak : 1")
    else:
        err_eqs += ["deps/dt = (target - leak * eps) / tau_e" + (" + sqrt(q_e / tau_e) * xi_e" if noisy_e else "")
                    + " : 1", "tau_e : second (constant)", "q_e : 1 (constant)"]
    return b2.NeuronGroup(int(spec["B"]) * int(spec["n"]), "\n".join(err_eqs), method="euler",
                          order=_state_order(spec), namespace=ns, name="error_units*", **kw)


def _layer_synapses(b2, spec, layers, sizes, ns, kw):
    """Per layer l = 1..L, within each chain: the forward synapses (w = W_l, and wfb = the feedback copy's weights
    when ``separate_fb``) summed into layer l first, in order 1..L, then the feedback synapses (wb = Wfb_l^T)
    summed back into layer l-1, in order L..1."""
    B, L, separate_fb = int(spec["B"]), int(spec["L"]), bool(spec["separate_fb"])
    synapses = []
    for l in range(1, L + 1):
        pre, post = layers[l - 1], layers[l]
        n_pre, n_post = sizes[l - 1], sizes[l]
        c, k, m = np.meshgrid(np.arange(B), np.arange(n_pre), np.arange(n_post), indexing="ij")
        i_pre, j_post = (c * n_pre + k).ravel(), (c * n_post + m).ravel()
        W, Wfb = np.asarray(spec[f"W{l}"], float), np.asarray(spec[f"Wfb{l}"], float)
        h_pre = "zo" if l == 1 else "h"
        model = ["w : 1 (constant)", f"a_raw_post = w * {h_pre}_pre : 1 (summed)"]
        if separate_fb:
            model += ["wfb : 1 (constant)", f"afb_raw_post = wfb * {'zo' if l == 1 else 'hfb'}_pre : 1 (summed)"]
        fwd = b2.Synapses(pre, post, "\n".join(model), namespace=ns, name=f"forward{l}*", **kw)
        fwd.connect(i=i_pre, j=j_post)
        fwd.w = W[m.ravel(), k.ravel()]
        if separate_fb:
            fwd.wfb = Wfb[m.ravel(), k.ravel()]
        for u in fwd.summed_updaters.values():
            u.order = l                                       # forward layers 1..L
        back = b2.Synapses(post, pre, "wb : 1 (constant)\n" + f"{'fb' if l == 1 else 'g_raw'}_post = wb * delta_pre : 1 "
                           "(summed)", namespace=ns, name=f"feedback{l}*", **kw)
        back.connect(i=j_post, j=i_pre)
        back.wb = Wfb[m.ravel(), k.ravel()]
        for u in back.summed_updaters.values():
            u.order = L + 1 + (L - l)                         # then backward layers L..1
        synapses += [fwd, back]
    return synapses


def _set_parameters_and_state(spec, layers, B, adiabatic, second):
    """Per-unit parameters (tiled over the B chains), biases, the input x and the initial state z0 (and eps0)."""
    value, error = layers[0], layers[-1]
    value.tau_z = np.tile(np.asarray(spec["tau_z"], float), B) * second
    value.q_z = np.tile(np.asarray(spec["q_z"], float), B)
    value.g_v = np.tile(np.asarray(spec["g_v"], float), B)
    value.o_v = np.tile(np.asarray(spec["o_v"], float), B)
    value.z = np.asarray(spec["z0"], float).ravel()
    for l, group in enumerate(layers[1:], start=1):
        group.bias = np.tile(np.asarray(spec[f"b{l}"], float), B)
    error.x_in = np.asarray(spec["x"], float).ravel()
    for name in ("g_p", "o_p", "g_e", "o_e"):
        setattr(error, name, np.tile(np.asarray(spec[name], float), B))
    if not adiabatic:
        error.tau_e = np.tile(np.asarray(spec["tau_e"], float), B) * second
        error.q_e = np.tile(np.asarray(spec["q_e"], float), B)
        error.eps = np.asarray(spec["eps0"], float).ravel()


def _state_monitors(b2, value, error, record_every, dt, codeobj_class, adiabatic):
    """StateMonitors of z (and eps when the error units have dynamics) in the "start" slot every ``record_every``
    steps."""
    monitors = {}
    mkw = {"dt": int(record_every) * dt, "when": "start"}
    if codeobj_class is not None:
        mkw["codeobj_class"] = codeobj_class
    monitors["z"] = b2.StateMonitor(value, "z", record=True, name="z_monitor*", **mkw)
    if not adiabatic:
        monitors["eps"] = b2.StateMonitor(error, "eps", record=True, name="eps_monitor*", **mkw)
    return monitors


def record_rows(steps, record_every):
    """(monitor rows to keep, whether the final state is appended): records after steps k * record_every,
    k = 1..steps // record_every, as ``Circuit.simulate`` (the monitor sees the state at the start of a step)."""
    count = -(-steps // record_every)                 # monitor rows at steps 0, every, ... < steps
    return slice(1, count), steps % record_every == 0


def run_network(spec, steps, record_every=1, seed=None, codeobj_class=None):
    """Build and run ``spec`` for ``steps`` steps; returns {"t": (R,), "z": (R, B, d), "eps": (R, B, n) or None}.

    Records after every ``record_every``-th step (R = steps // record_every, t = k record_every dt), as
    ``Circuit.simulate``. ``seed`` seeds Brian2's random numbers (``brian2.seed``; numpy's global generator
    for runtime targets, whose state is restored afterwards).
    """
    import brian2 as b2

    B, d, n = int(spec["B"]), int(spec["d"]), int(spec["n"])
    dt = float(spec["dt"])
    net, groups, mon = build_network(spec, record_every, codeobj_class)
    state = np.random.get_state()
    try:
        if seed is not None:
            b2.seed(int(seed))
        net.run(steps * dt * b2.second, namespace={})
        rows, final = record_rows(steps, record_every)
        z = np.asarray(mon["z"].z[:, rows]).T
        eps = np.asarray(mon["eps"].eps[:, rows]).T if "eps" in mon else None
        if final:
            z = np.concatenate([z, np.asarray(groups["value"].z[:])[None]])
            if eps is not None:
                eps = np.concatenate([eps, np.asarray(groups["error"].eps[:])[None]])
    finally:
        if seed is not None:
            np.random.set_state(state)
    R = steps // record_every
    t = np.arange(1, R + 1) * record_every * dt
    return {"t": t, "z": z.reshape(R, B, d), "eps": None if eps is None else eps.reshape(R, B, n)}


def summary_statistics(z, burn_fraction=0.5):
    """Stationary statistics of a record z (R, B, d) after dropping the first ``burn_fraction`` of records:
    {"mean": (d,), "cov": (d, d)} pooled over chains and records, and "n_samples"."""
    z = np.asarray(z, float)
    kept = z[int(burn_fraction * z.shape[0]):].reshape(-1, z.shape[-1])
    return {"mean": kept.mean(0), "cov": np.atleast_2d(np.cov(kept.T)), "n_samples": int(kept.shape[0])}
