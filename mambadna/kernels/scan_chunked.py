"""Exact selective scan for CPU: a two-level (chunked) linear recurrence with a hand-written backward.

Why two levels: a sequential scan costs l Python steps on small tensors. Splitting l into K chunks of T
positions, we (1) run the recurrence over the T positions of every chunk at once from a zero state, (2) carry
the true state across the K chunk boundaries, (3) add each chunk's carried-in state times the product of the
decays since the chunk start. That is T + K short loops of large vectorised ops instead of l tiny ones. It is
exact (equal to the sequential scan up to fp32 rounding): the in-chunk decay products exp(A * sum of Δ) lie
in [0, 1] (sums of Δ >= 0, A < 0), so nothing overflows for any Δ >= 0 (no exp(-cumsum) factors).

The backward recomputes the states and runs the same two-level scan in reverse on the adjoint
g_t = C_t dy_t + a_{t+1} g_{t+1} (a_t = exp(Δ_t A)); every input gradient is then a reduction of products.

Why blocks of channels: on the small CPUs this targets, memory bandwidth (and first-touch page faults on
fresh large tensors) dominated: full-size passes over (b, d, l, n) ran ~10x slower than the same passes over
cache-sized pieces. So channels are processed in blocks whose (L, b, channels, n) temporaries fit in cache,
in a few buffers allocated once per call and reused for every block. Only the inputs are saved for the
backward, so memory stays O(inputs) instead of O(b d l n).

Internal layout per block is sequence-major (K, T, b, channels, n), so a position's slice across all chunks
is one strided view and a shift by one position is a plain offset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Temporaries of one channel block hold about this many values (4 MiB in fp32): the forward uses 3, the
# backward 6, which together stay within the L3 cache of a small CPU.
BLOCK_ELEMENTS = 1 << 20

# Products of decays below exp(-80) < 2e-35 are raised to it: that changes a state by less than 2e-35 times
# the state it decays (far below fp32 resolution), and keeps exp and the products off the CPU's slow
# underflow/subnormal paths, which made them ~10x slower once most in-chunk products underflowed.
EXP_FLOOR = -80.0


def default_chunk_size(l: int) -> int:
    """Chunk length T ~ sqrt(l) balances the T in-chunk steps against the K = l / T carry steps."""
    return max(1, min(l, round(math.sqrt(l))))


def _scan_chunks_(x: torch.Tensor, a: torch.Tensor) -> None:
    """In place over every chunk at once: x[:, j] += a[:, j] * x[:, j - 1] along the T positions of (K, T, M)."""
    xj, aj = x.unbind(1), a.unbind(1)
    for j in range(1, x.shape[1]):
        xj[j].addcmul_(aj[j], xj[j - 1])


def _scan_forward_(x: torch.Tensor, a: torch.Tensor, decay: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """In place, turn x (K, T, M) into the states h_t = a_t h_{t-1} + x_t of the K * T positions, h_{-1} = h0
    (or 0). decay[k, j] = a[k, 0] * ... * a[k, j]. Returns carry (K + 1, M): carry[k] is the state entering
    chunk k, carry[K] the final state."""
    K, T, M = x.shape
    _scan_chunks_(x, a)  # each chunk from a zero state
    carry = x.new_empty(K + 1, M)
    if h0 is None:
        carry[0].zero_()
    else:
        carry[0] = h0
    ends, chunk_decay, carries = x[:, T - 1].unbind(0), decay[:, T - 1].unbind(0), carry.unbind(0)
    for k in range(K):
        torch.addcmul(ends[k], chunk_decay[k], carries[k], out=carries[k + 1])
    if h0 is not None or K > 1:
        x.addcmul_(decay, carry[:K].unsqueeze(1))
    return carry


def _scan_reverse_(c: torch.Tensor, a: torch.Tensor, decay: torch.Tensor, g_last: torch.Tensor | None):
    """In place, turn c (K, T, M) into g_t = c_t + a_{t+1} g_{t+1} with g at the last position = c + g_last.
    decay[k, j] = a[k, j + 1] * ... * a[k, T - 1] (1 at j = T - 1). Returns a_0 g_0, the gradient of h_{-1}."""
    K, T, M = c.shape
    cj, aj = c.unbind(1), a.unbind(1)
    for j in range(T - 2, -1, -1):  # each chunk from a zero adjoint at its right end
        cj[j].addcmul_(aj[j + 1], cj[j + 1])
    carry = c.new_empty(K + 1, M)  # carry[k + 1]: the true adjoint entering chunk k from its right
    if g_last is None:
        carry[K].zero_()
    else:
        carry[K] = g_last
    starts, first_decay, inner = cj[0].unbind(0), aj[0].unbind(0), decay[:, 0].unbind(0)
    carries = carry.unbind(0)
    for k in range(K - 1, -1, -1):
        torch.mul(first_decay[k], torch.addcmul(starts[k], inner[k], carries[k + 1]), out=carries[k])
    if g_last is not None or K > 1:
        c.addcmul_(decay, carry[1:].unsqueeze(1))
    return carry[0]


def _seq_major(M: torch.Tensor, L: int, dtype: torch.dtype) -> torch.Tensor:
    """(..., l) -> (L, ...) in dtype, zero-padded from l to L positions."""
    M = M.to(dtype).movedim(-1, 0)
    if M.shape[0] < L:
        M = torch.cat([M, M.new_zeros(L - M.shape[0], *M.shape[1:])])
    return M.contiguous()


def _groups(M: torch.Tensor) -> torch.Tensor:
    """B or C as (b, g, n, l): the shared (b, n, l) form is one group."""
    return M.unsqueeze(1) if M.dim() == 3 else M


class _Workspace:
    """Named flat buffers sized for the widest block, handed out as views so that every block reuses them."""

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device):
        self.numel, self.dtype, self.device, self.buffers = numel, dtype, device, {}

    def get(self, name: str, shape) -> torch.Tensor:
        if name not in self.buffers:
            self.buffers[name] = torch.empty(self.numel, dtype=self.dtype, device=self.device)
        return self.buffers[name][: math.prod(shape)].view(shape)


class _Inputs:
    """The scan inputs in the sequence-major, padded layout, and the per-block state recomputation shared by
    forward and backward."""

    def __init__(self, u, delta, A, B, C, delta_bias, initial_state, delta_softplus, T):
        b, d, l = u.shape
        self.cdt = cdt = torch.promote_types(u.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs (gradcheck)
        self.b, self.d, self.n, self.T = b, d, A.shape[1], T
        self.L = L = -(-l // T) * T
        self.dt_raw = delta.to(cdt)
        if delta_bias is not None:
            self.dt_raw = self.dt_raw + delta_bias.to(cdt)[:, None]
        dt = F.softplus(self.dt_raw) if delta_softplus else self.dt_raw
        # padded positions get Δ = 0, so decay 1 and input 0: the state passes through them unchanged
        self.dt = _seq_major(dt, L, cdt)  # (L, b, d)
        self.u = _seq_major(u, L, cdt)  # (L, b, d)
        self.B = _seq_major(_groups(B), L, cdt)  # (L, b, g, n)
        self.C = _seq_major(_groups(C), L, cdt)  # (L, b, g, n)
        self.A = A.to(cdt)
        self.h0 = None if initial_state is None else initial_state.to(cdt)

    def blocks(self):
        """Yield (group, first channel, end channel) blocks that stay inside one B/C group and hold about
        BLOCK_ELEMENTS state values; also sizes the workspace for the widest one."""
        g = self.B.shape[2]
        H = self.d // g
        per_channel = self.L * self.b * self.n
        width = max(1, min(H, BLOCK_ELEMENTS // per_channel))
        self.workspace = _Workspace(width * per_channel, self.cdt, self.u.device)
        for gi in range(g):
            for c0 in range(gi * H, (gi + 1) * H, width):
                yield gi, c0, min(c0 + width, (gi + 1) * H)

    def decays_and_inputs(self, gi, c0, c1):
        """For channels [c0, c1) of group gi, as (K, T, b, c, n) workspace views: the decays a = exp(Δ A), the
        inputs Δ u B, and the in-chunk running sums of Δ (K, T, b, c, 1)."""
        K, T, b, c, n = self.L // self.T, self.T, self.b, c1 - c0, self.n
        ws, shape = self.workspace, (K, T, b, c, n)
        dt = self.dt[:, :, c0:c1].contiguous().view(K, T, b, c, 1)  # contiguous: broadcasting it is 3x faster
        a = torch.mul(dt, self.A[c0:c1], out=ws.get("a", shape)).exp_()
        dtu = dt * self.u[:, :, c0:c1].reshape(K, T, b, c, 1)
        x = torch.mul(dtu, self.B[:, :, gi].view(K, T, b, 1, n), out=ws.get("h", shape))
        return a, x, torch.cumsum(dt, dim=1)

    def in_chunk_decay(self, run, c0, c1, reverse=False):
        """exp(A * sum of Δ) from the chunk start to each position (or, reverse, from after each position to the
        chunk end): the product of those decays up to rounding, at the cost of one exp instead of a T-step
        cumprod. The sums are >= 0 and A < 0, so it lies in [0, 1] and cannot overflow."""
        if reverse:
            run = run[:, -1:] - run
        shape = run.shape[:-1] + (self.n,)
        exponent = torch.mul(run, self.A[c0:c1], out=self.workspace.get("decay", shape))
        return exponent.clamp_(min=EXP_FLOOR).exp_()  # (K, T, b, c, n)

    def states(self, gi, c0, c1):
        """Forward: states h (K, T, b, c, n) of channels [c0, c1) and the chunk carries (K + 1, b, c, n)."""
        a, h, run = self.decays_and_inputs(gi, c0, c1)
        decay = self.in_chunk_decay(run, c0, c1)
        h0 = None if self.h0 is None else self.h0[:, c0:c1].reshape(-1)
        carry = _scan_forward_(h.view(*h.shape[:2], -1), a.view(*a.shape[:2], -1), decay.view(*a.shape[:2], -1), h0)
        return h, carry.view(-1, *h.shape[2:])


class _SelectiveScanChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, chunk_size):
        with torch.autocast(device_type=u.device.type, enabled=False):
            return _forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, chunk_size)

    @staticmethod
    def backward(ctx, dout, dh_last):
        with torch.autocast(device_type=ctx.device_type, enabled=False):
            return _backward(ctx, dout, dh_last)


def _forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, T):
    b, d, l = u.shape
    n = A.shape[1]
    x = _Inputs(u, delta, A, B, C, delta_bias, initial_state, delta_softplus, T)
    y_s = torch.empty(x.L, b, d, dtype=x.cdt, device=u.device)
    carries = torch.empty(x.L // T + 1, b, d, n, dtype=x.cdt, device=u.device)  # state entering each chunk
    for gi, c0, c1 in x.blocks():
        h, carries[:, :, c0:c1] = x.states(gi, c0, c1)
        y_s[:, :, c0:c1] = torch.matmul(h.view(x.L, b, c1 - c0, n), x.C[:, :, gi, :, None]).squeeze(-1)
    h_last = carries[-1].clone()
    y = y_s[:l].permute(1, 2, 0)  # (b, d, l)
    if D is not None:
        y = y + D.to(x.cdt)[:, None] * u.to(x.cdt)
    out = y * F.silu(z.to(x.cdt)) if z is not None else y

    # only the inputs, the chunk carries and y before gating are kept: the backward recomputes the states
    # block by block, each chunk from its true carried-in state
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, carries, y if z is not None else None)
    ctx.meta = (delta_softplus, T)
    ctx.device_type = u.device.type
    ctx.set_materialize_grads(False)  # an unused final state then costs nothing in the backward
    return out.to(u.dtype), h_last


def _backward(ctx, dout, dh_last):
    u, delta, A, B, C, D, z, delta_bias, initial_state, carries, y = ctx.saved_tensors
    delta_softplus, T = ctx.meta
    b, d, l = u.shape
    n = A.shape[1]
    x = _Inputs(u, delta, A, B, C, delta_bias, initial_state, delta_softplus, T)
    cdt, L = x.cdt, x.L

    grads = dict.fromkeys(("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"))
    dout = u.new_zeros(u.shape, dtype=cdt) if dout is None else dout.to(cdt)
    if z is not None:
        z_c = z.to(cdt)
        grads["z"] = torch.ops.aten.silu_backward(dout * y, z_c)  # dout * y * silu'(z), fused
        dy = dout * F.silu(z_c)
    else:
        dy = dout
    if D is not None:
        grads["D"] = (dy * u.to(cdt)).sum(dim=(0, 2))
    dy_s = _seq_major(dy, L, cdt)  # (L, b, d)

    dB = torch.zeros_like(x.B)  # (L, b, g, n)
    dC = torch.zeros_like(x.C)  # (L, b, g, n)
    dA = torch.empty_like(x.A)  # (d, n)
    d_dt_s = torch.empty_like(x.dt)  # (L, b, d)
    du_s = torch.empty_like(x.u)  # (L, b, d)
    dh0 = torch.empty(b, d, n, dtype=cdt, device=u.device)
    K = L // T
    for gi, c0, c1 in x.blocks():
        c = c1 - c0
        a, h, run = x.decays_and_inputs(gi, c0, c1)
        h[:, 0].addcmul_(a[:, 0], carries[:K, :, c0:c1])  # start every chunk from its true state
        _scan_chunks_(h.view(K, T, -1), a.view(K, T, -1))
        decay_rev = x.in_chunk_decay(run, c0, c1, reverse=True)
        a, h = a.view(L, b, c, n), h.view(L, b, c, n)
        dt, u_b, dy_b = x.dt[:, :, c0:c1, None], x.u[:, :, c0:c1, None], dy_s[:, :, c0:c1, None]  # (L, b, c, 1)
        B_g, C_g = x.B[:, :, gi, None, :], x.C[:, :, gi, None, :]  # (L, b, 1, n)
        prod = x.workspace.get("prod", (L, b, c, n))  # scratch for the products reduced below
        # adjoint of the state: g_t = C_t dy_t + a_{t+1} g_{t+1}, plus the gradient of the returned final state
        adj = torch.mul(dy_b, C_g, out=x.workspace.get("adj", (L, b, c, n)))
        g_last = None if dh_last is None else dh_last[:, c0:c1].to(cdt).reshape(-1)
        dh0[:, c0:c1] = _scan_reverse_(
            adj.view(K, T, -1), a.view(K, T, -1), decay_rev.view(K, T, -1), g_last
        ).view(b, c, n)

        dC[:, :, gi] += torch.mul(h, dy_b, out=prod).sum(2)
        dB[:, :, gi] += torch.mul(adj, dt * u_b, out=prod).sum(2)
        d_dtu = torch.matmul(adj, B_g.transpose(-1, -2))  # (L, b, c, 1)
        # d loss / d a_t = g_t h_{t-1}; through a_t = exp(Δ_t A) that is times a_t Δ_t for A, a_t A for Δ
        da = adj.mul_(a)  # (L, b, c, n), reusing the adjoint's memory
        da[1:] *= h[:-1]
        if x.h0 is None:
            da[0].zero_()
        else:
            da[0] *= x.h0[:, c0:c1]
        dA[c0:c1] = torch.mul(da, dt, out=prod).sum((0, 1))
        d_dt_s[:, :, c0:c1] = torch.mul(da, x.A[c0:c1], out=prod).sum(-1) + (d_dtu * u_b).squeeze(-1)
        du_s[:, :, c0:c1] = (d_dtu * dt).squeeze(-1)

    if initial_state is not None:
        grads["initial_state"] = dh0
    grads["A"] = dA
    d_dt = d_dt_s[:l].permute(1, 2, 0)  # (b, d, l)
    du = du_s[:l].permute(1, 2, 0)  # (b, d, l)
    if D is not None:
        du = du + dy * D.to(cdt)[:, None]
    if delta_softplus:
        d_dt = d_dt * torch.sigmoid(x.dt_raw)
    grads["u"], grads["delta"] = du, d_dt
    if delta_bias is not None:
        grads["delta_bias"] = d_dt.sum(dim=(0, 2))
    for name, M, dM in (("B", B, dB), ("C", C, dC)):
        dM = dM[:l].permute(1, 2, 3, 0)  # (b, g, n, l)
        grads[name] = dM.squeeze(1) if M.dim() == 3 else dM

    inputs = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)
    out = []
    for i, name in enumerate(inputs):
        grad = grads[name]
        wanted = ctx.needs_input_grad[i] and grad is not None
        out.append(grad.to(inputs[name].dtype).contiguous() if wanted else None)
    return (*out, None, None)


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    chunk_size: int | None = None,
):
    """Chunked selective scan, equal to ``selective_scan_ref`` up to floating-point rounding.
    ``chunk_size`` (positions per chunk) defaults to ~sqrt(l). Returns y (b, d, l) in u's dtype
    [, h_last (b, d, n) fp32 (fp64 for fp64 inputs)]; gradients come back in the inputs' dtypes."""
    l = u.shape[-1]
    T = default_chunk_size(l) if chunk_size is None else chunk_size
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    y, h_last = _SelectiveScanChunked.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, T)
    return (y, h_last) if return_final_state else y
