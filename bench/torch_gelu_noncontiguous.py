#!/usr/bin/env python3
"""Debian's python3-torch 1.13 (1.13.0a0): F.gelu's float32 backward with a non-contiguous incoming gradient (as a
permute or transpose after the GELU gives) against the same call with the gradient made contiguous
and against the analytic derivative; other activations alike for comparison.

    /usr/bin/python3 bench/torch_gelu_noncontiguous.py
"""
import torch, torch.nn.functional as F
torch.manual_seed(0)
bad = 0
for trial in range(20):
    x = torch.randn(2, 32, 20, requires_grad=True)
    g = torch.randn(2, 20, 32).permute(0, 2, 1)  # a non-contiguous gradient, as a permute's backward gives
    y = F.gelu(x)
    (gx,) = torch.autograd.grad(y, x, g)
    x2 = x.detach().clone().requires_grad_()
    (gx2,) = torch.autograd.grad(F.gelu(x2), x2, g.contiguous())
    err = (gx - gx2).abs().max().item()
    bad += err > 1e-5
    if trial < 3 or err > 1e-5: print(trial, err)
print("bad", bad, "of 20", torch.__version__, torch.__config__.parallel_info().split('\n')[0:4])
x = torch.randn(2, 32, 20, requires_grad=True)
g = torch.randn(2, 20, 32).permute(0, 2, 1)
xd = x.detach()
analytic = g * (0.5 * (1 + torch.erf(xd / 2 ** 0.5)) + xd * torch.exp(-xd ** 2 / 2) / (2 * torch.pi) ** 0.5)
(gnc,) = torch.autograd.grad(F.gelu(x), x, g)
(gc,) = torch.autograd.grad(F.gelu(x), x, g.contiguous())
print("noncontig err", (gnc - analytic).abs().max().item(), "contig err", (gc - analytic).abs().max().item())
for name, fn in [("relu", F.relu), ("silu", F.silu), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"))]:
    (a,) = torch.autograd.grad(fn(x), x, g); (b,) = torch.autograd.grad(fn(x), x, g.contiguous())
    print(name, (a - b).abs().max().item())
