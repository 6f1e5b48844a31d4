"""Selective scan, Mamba mixer and block (issue 4 §1): dartok.mamba against mamba_ssm's reference."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from dartok import mamba
from dartok.mamba import (
    Block, Mamba, RMSNorm, selective_scan, selective_scan_macs, selective_scan_ref, use_cuda_kernel,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan_inputs(b=2, d=5, n=3, length=13, dtype=torch.float64, seed=0, with_z=True, with_d=True, with_bias=True,
                delta_scale=0.5, a_scale=3.0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    t = {
        "u": r(b, d, length), "delta": r(b, d, length) * delta_scale,
        "A": -torch.rand(d, n, generator=g, dtype=dtype) * a_scale,
        "B": r(b, n, length), "C": r(b, n, length),
        "D": r(d) if with_d else None, "z": r(b, d, length) if with_z else None,
        "delta_bias": r(d) * 0.3 if with_bias else None,
    }
    return {k: (v.requires_grad_() if v is not None else None) for k, v in t.items()}


def run(fn, t, softplus, **kw):
    return fn(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"], delta_bias=t["delta_bias"],
              delta_softplus=softplus, **kw)


def values_and_grads(fn, t, softplus, weight, **kw):
    out = run(fn, t, softplus, **kw)
    leaves = [t[k] for k in NAMES if t[k] is not None]
    grads = torch.autograd.grad((out * weight).sum(), leaves)
    return out, dict(zip([k for k in NAMES if t[k] is not None], grads))


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("with_z,with_d,with_bias", [(True, True, True), (False, False, False), (True, False, True)])
@pytest.mark.parametrize("chunk_size", [64, 4, 1])
def test_chunked_scan_matches_reference_values_and_gradients(softplus, with_z, with_d, with_bias, chunk_size):
    # length 13 is not a multiple of 4: the chunked scan pads to 16 steps
    t = scan_inputs(with_z=with_z, with_d=with_d, with_bias=with_bias)
    weight = torch.randn(2, 5, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out, grads = values_and_grads(selective_scan, t, softplus, weight, backend="torch", chunk_size=chunk_size)
    ref, ref_grads = values_and_grads(selective_scan_ref, t, softplus, weight)
    scale = float(ref.detach().abs().max())
    torch.testing.assert_close(out, ref, atol=1e-10 * scale, rtol=1e-9)
    assert set(grads) == set(ref_grads)
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-10 * float(ref_grads[k].abs().max()), rtol=1e-9,
                                   msg=lambda m, k=k: f"gradient of {k}: {m}")


def test_chunked_scan_float32_matches_reference():
    t = scan_inputs(b=3, d=8, n=16, length=37, dtype=torch.float32, a_scale=16.0)
    weight = torch.randn(3, 8, 37)
    out, grads = values_and_grads(selective_scan, t, True, weight, backend="torch")
    ref, ref_grads = values_and_grads(selective_scan_ref, t, True, weight)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-4 * float(ref.detach().abs().max()), rtol=1e-4)
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-4 * float(ref_grads[k].abs().max()), rtol=1e-3)


def test_chunked_scan_is_stable_where_one_exponential_would_overflow():
    # Δ·|A| sums to ~2e4 over the sequence: exp of the cumulative log-decay is far outside
    # float32 (e^88); the chunk layout splits the sequence so every exponent stays in range
    t = scan_inputs(b=2, d=4, n=8, length=50, dtype=torch.float32, a_scale=50.0, seed=3)
    with torch.no_grad():
        t["delta_bias"].fill_(3.0)
    dt = F.softplus(t["delta"] + t["delta_bias"][:, None]).detach()
    n, size = mamba._chunk_layout(dt, t["A"].detach(), 64)
    assert n > 1 and n * size >= 50
    weight = torch.randn(2, 4, 50)
    out, grads = values_and_grads(selective_scan, t, True, weight, backend="torch")
    ref, ref_grads = values_and_grads(selective_scan_ref, t, True, weight)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    torch.testing.assert_close(out, ref, atol=1e-4 * float(ref.detach().abs().max()), rtol=1e-4)
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-4 * float(ref_grads[k].abs().max()), rtol=1e-3)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), d=st.integers(1, 6), n=st.integers(1, 5), length=st.integers(1, 40),
       chunk=st.integers(1, 70), softplus=st.booleans(), seed=st.integers(0, 2**16))
def test_chunked_scan_any_shape_property(b, d, n, length, chunk, softplus, seed):
    t = scan_inputs(b=b, d=d, n=n, length=length, seed=seed)
    weight = torch.randn(b, d, length, dtype=torch.float64)
    out, grads = values_and_grads(selective_scan, t, softplus, weight, backend="torch", chunk_size=chunk)
    ref, ref_grads = values_and_grads(selective_scan_ref, t, softplus, weight)
    assert out.shape == (b, d, length)
    torch.testing.assert_close(out, ref, atol=1e-9 * (1 + float(ref.detach().abs().max())), rtol=1e-8)
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-9 * (1 + float(ref_grads[k].abs().max())), rtol=1e-8)


@settings(max_examples=60, deadline=None)
@given(rates=st.lists(st.floats(0, 300), min_size=1, max_size=90), chunk=st.integers(1, 64))
def test_chunk_layout_bounds_every_exponent(rates, chunk):
    dt = torch.tensor(rates, dtype=torch.float32).view(1, 1, -1)
    n, size = mamba._chunk_layout(dt, -torch.ones(1, 1), chunk)
    length = len(rates)
    assert 1 <= size <= min(chunk, length) and n * size >= length > (n - 1) * size
    windows = F.pad(dt.flatten().double(), (0, n * size - length)).view(n, size)
    assert float(windows[:, 1:].sum(1).max()) <= 2 * mamba._BUDGET[torch.float32] or size == 1


def test_reference_matches_explicit_recurrence():
    """The reference itself: h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t, y_t = C_t·h_t + D u_t, · silu(z)."""
    t = {k: (v.detach() if v is not None else None) for k, v in scan_inputs(b=1, d=2, n=2, length=4).items()}
    delta = F.softplus(t["delta"] + t["delta_bias"][:, None])
    expected = torch.zeros(1, 2, 4, dtype=torch.float64)
    for d in range(2):
        h = torch.zeros(2, dtype=torch.float64)
        for step in range(4):
            dt = delta[0, d, step]
            h = torch.exp(dt * t["A"][d]) * h + dt * t["B"][0, :, step] * t["u"][0, d, step]
            y = (t["C"][0, :, step] * h).sum() + t["D"][d] * t["u"][0, d, step]
            expected[0, d, step] = y * F.silu(t["z"][0, d, step])
    torch.testing.assert_close(run(selective_scan_ref, t, True), expected)


def test_scan_keeps_dtype_and_computes_half_in_float32():
    t = {k: (v.detach().to(torch.bfloat16) if v is not None else None)
         for k, v in scan_inputs(length=9, dtype=torch.float32).items()}
    out = run(selective_scan, t, True, backend="torch")
    ref = run(selective_scan_ref, {k: (v.float() if v is not None else None) for k, v in t.items()}, True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.05 * float(ref.detach().abs().max()), rtol=0.02)


def test_scan_rejects_bad_inputs_and_backends():
    t = {k: (v.detach() if v is not None else None) for k, v in scan_inputs().items()}
    with pytest.raises(ValueError, match="u must be batch×dim×length"):
        selective_scan(t["u"][0], t["delta"][0], t["A"], t["B"], t["C"])
    with pytest.raises(ValueError, match="A must be dim×d_state"):
        selective_scan(t["u"], t["delta"], t["A"][:2], t["B"], t["C"])
    with pytest.raises(ValueError, match="B must be input-dependent"):
        selective_scan(t["u"], t["delta"], t["A"], t["B"][:, :2], t["C"])
    with pytest.raises(ValueError, match="delta_bias must be None or"):
        selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], delta_bias=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="floating-point"):
        selective_scan(t["u"].long(), t["delta"], t["A"], t["B"], t["C"])
    with pytest.raises(ValueError, match="backend must be one of"):
        selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="triton")
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], chunk_size=0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        selective_scan(t["u"], t["delta"].clone().fill_(float("nan")), t["A"], t["B"], t["C"], backend="torch")
    with pytest.raises(RuntimeError, match="backend='cuda' needs"):
        selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="cuda")


def test_dispatch_never_sends_cpu_tensors_to_the_cuda_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(mamba, "_CUDA_SCAN", [lambda *a: calls.append(a)])
    assert mamba.cuda_kernel_available()
    t = {k: (v.detach() if v is not None else None) for k, v in scan_inputs().items()}
    out = run(selective_scan, t, True)  # backend="auto", CPU tensors: PyTorch path
    torch.testing.assert_close(out, run(selective_scan_ref, t, True))
    assert calls == []
    with pytest.raises(RuntimeError, match="device: cpu"):
        run(selective_scan, t, True, backend="cuda")
    previous = use_cuda_kernel(False)
    try:
        assert previous is True and mamba._USE_CUDA_KERNEL is False
    finally:
        use_cuda_kernel(previous)


def test_selective_scan_macs_reproduces_the_papers_vim_gflops():
    """fvcore-visible MACs of hustvl's Vim (patch embed, in_proj, out_proj, head) + 2 scans per layer."""
    assert selective_scan_macs(2, 384, 16, 197) == 2 * 197 * 384 * (9 * 16 + 2)
    assert selective_scan_macs(1, 384, 16, 197, with_D=False, with_z=False) == 9 * 197 * 384 * 16

    def vim_gmacs(dim, depth=24, tokens=197, classes=1000):
        inner = 2 * dim
        visible = 196 * 3 * 16 * 16 * dim + depth * tokens * (dim * 2 * inner + inner * dim) + dim * classes
        return (visible + depth * 2 * selective_scan_macs(1, inner, 16, tokens)) / 1e9

    assert round(vim_gmacs(192), 2) == 1.60  # Vim-Ti (DART paper Table 1)
    assert Mamba(192, bimamba_type="v2").scan_macs(1, 197) == 2 * selective_scan_macs(1, 384, 16, 197)
    assert Mamba(192).scan_macs(3, 10) == selective_scan_macs(3, 384, 16, 10)
    assert round(vim_gmacs(384), 2) == 5.30  # Vim-S
    with pytest.raises(ValueError, match="length must be a non-negative int"):
        selective_scan_macs(1, 4, 4, -1)


# --------------------------------------------------------------------------- modules

def mixer_reference(m: Mamba, hidden: torch.Tensor) -> torch.Tensor:
    """hustvl mamba_simple.Mamba.forward, fast path with bimamba v2 (mamba_inner_fn_no_out_proj twice)."""
    length = hidden.shape[1]
    xz = (m.in_proj.weight @ hidden.reshape(-1, hidden.shape[-1]).t()).reshape(
        -1, hidden.shape[0], length).permute(1, 0, 2)

    def inner(xz, conv, x_proj_w, dt_proj_w, A, D, dt_bias):
        x, z = xz.chunk(2, dim=1)
        x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=m.d_conv - 1, groups=m.d_inner)[..., :length])
        x_dbl = F.linear(x.transpose(1, 2).reshape(-1, m.d_inner), x_proj_w)  # (b l) d
        delta = (dt_proj_w @ x_dbl[:, :m.dt_rank].t()).reshape(m.d_inner, -1, length).permute(1, 0, 2)
        Bm = x_dbl[:, m.dt_rank:m.dt_rank + m.d_state].reshape(-1, length, m.d_state).transpose(1, 2)
        Cm = x_dbl[:, -m.d_state:].reshape(-1, length, m.d_state).transpose(1, 2)
        return selective_scan_ref(x, delta, A, Bm, Cm, D, z=z, delta_bias=dt_bias, delta_softplus=True)

    out = inner(xz, m.conv1d, m.x_proj.weight, m.dt_proj.weight, -torch.exp(m.A_log), m.D, m.dt_proj.bias)
    out_b = inner(xz.flip([-1]), m.conv1d_b, m.x_proj_b.weight, m.dt_proj_b.weight, -torch.exp(m.A_b_log), m.D_b,
                  m.dt_proj_b.bias)
    both = (out + out_b.flip([-1])).transpose(1, 2)
    return F.linear(both / 2 if m.if_devide_out else both, m.out_proj.weight, m.out_proj.bias)


def test_bimamba_v2_mixer_matches_hustvl_fast_path():
    torch.manual_seed(0)
    m = Mamba(12, d_state=4, bimamba_type="v2", if_devide_out=True).double()
    hidden = torch.randn(2, 9, 12, dtype=torch.float64, requires_grad=True)
    out = m(hidden)
    ref = mixer_reference(m, hidden)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    g_out = torch.autograd.grad(out.square().sum(), [hidden, m.A_b_log, m.conv1d.weight])
    g_ref = torch.autograd.grad(ref.square().sum(), [hidden, m.A_b_log, m.conv1d.weight])
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    # if_devide_out halves the summed directions before the (bias-free) out_proj
    m.if_devide_out = False
    torch.testing.assert_close(m(hidden), 2 * out, atol=1e-12, rtol=1e-10)


def test_mamba_parameter_names_and_init_follow_mamba_simple():
    torch.manual_seed(0)
    m = Mamba(32, d_state=16, bimamba_type="v2", if_devide_out=True)
    names = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    inner, rank = 64, 2
    assert names == {
        "in_proj.weight": (2 * inner, 32), "out_proj.weight": (32, inner),
        "conv1d.weight": (inner, 1, 4), "conv1d.bias": (inner,), "x_proj.weight": (rank + 32, inner),
        "dt_proj.weight": (inner, rank), "dt_proj.bias": (inner,), "A_log": (inner, 16), "D": (inner,),
        "conv1d_b.weight": (inner, 1, 4), "conv1d_b.bias": (inner,), "x_proj_b.weight": (rank + 32, inner),
        "dt_proj_b.weight": (inner, rank), "dt_proj_b.bias": (inner,), "A_b_log": (inner, 16), "D_b": (inner,),
    }
    expected_a = torch.log(torch.arange(1, 17, dtype=torch.float32)).expand(inner, -1)
    torch.testing.assert_close(m.A_log.data, expected_a)
    torch.testing.assert_close(m.A_b_log.data, expected_a)
    assert torch.equal(m.D.data, torch.ones(inner)) and torch.equal(m.D_b.data, torch.ones(inner))
    for proj in (m.dt_proj, m.dt_proj_b):
        dt = F.softplus(proj.bias.data)
        assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6 and proj.bias._no_reinit
        assert proj.weight.abs().max() <= rank ** -0.5
    assert set(Mamba(8).state_dict()) == {"in_proj.weight", "out_proj.weight", "conv1d.weight", "conv1d.bias",
                                          "x_proj.weight", "dt_proj.weight", "dt_proj.bias", "A_log", "D"}
    with pytest.raises(ValueError, match="bimamba_type"):
        Mamba(8, bimamba_type="v1")
    with pytest.raises(ValueError, match="inference_params"):
        m(torch.randn(1, 3, 32), inference_params=object())
    with pytest.raises(ValueError, match="hidden_states must be"):
        m(torch.randn(1, 3, 31))


def test_rmsnorm_matches_formula_and_keeps_dtype():
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(3, 6, dtype=torch.float64)
    expected = x / torch.sqrt(x.square().mean(-1, keepdim=True) + 1e-5) * norm.weight.double()
    torch.testing.assert_close(norm(x), expected)
    assert norm(x.bfloat16()).dtype == torch.bfloat16
    assert norm.bias is None and set(norm.state_dict()) == {"weight"}


def test_block_adds_then_norms_and_keeps_the_residual():
    torch.manual_seed(0)
    mixer = torch.nn.Linear(8, 8)
    block = Block(8, lambda dim: mixer, norm_cls=lambda dim: RMSNorm(dim), residual_in_fp32=True)
    h0 = torch.randn(2, 5, 8)
    out, res = block(h0)
    assert torch.equal(res, h0)
    torch.testing.assert_close(out, mixer(block.norm(h0)))
    h1 = torch.randn(2, 5, 8)
    out, res = block(h1, h0)
    torch.testing.assert_close(res, h0 + h1)
    torch.testing.assert_close(out, mixer(block.norm(h0 + h1)))
    _, res16 = block(h1.bfloat16(), h0.bfloat16())
    assert res16.dtype == torch.float32  # residual_in_fp32
    # drop path acts on the incoming mixer output only, per sample: kept ×1/(1−p) or dropped
    dp = Block(8, lambda dim: torch.nn.Identity(), norm_cls=lambda dim: RMSNorm(dim), drop_path=0.5)
    torch.manual_seed(1)
    _, res = dp.train()(torch.ones(64, 1, 8), torch.zeros(64, 1, 8))
    per_sample = res[:, 0, 0]
    assert set(per_sample.tolist()) == {0.0, 2.0} and torch.equal(res, per_sample[:, None, None].expand_as(res))
    _, res = dp.eval()(torch.ones(4, 1, 8), torch.zeros(4, 1, 8))
    assert torch.equal(res, torch.ones(4, 1, 8))
