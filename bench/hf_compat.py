"""Import Hugging Face transformers 4.57 beside Debian's torch 1.13, for reference exports only.

transformers 4.57 refuses torch < 2.1, and its import path touches a few torch 2 names. Nothing
here changes what a model computes; it lets the modules import, and works around four places where
torch 1.13's exporter writes a wrong graph for this code.

Imports:
- importlib.metadata reports torch as 2.1.0 to transformers' version gates, and the pinned
  tokenizers / huggingface_hub (bench/requirements-hf.txt: the newest this machine's index has)
  within transformers' ranges; torchvision as absent (its image utilities want a torchvision 0.15
  name; no exported model uses them);
- stubs: torch.compiler.disable and torch._dynamo.allow_in_graph as no-op decorators, torch.compile
  and torch.jit.script as identities (scripted helpers are traced as Python), torch.vmap as
  functorch's, torch.utils._pytree.register_pytree_node as 1.13's private one, empty
  torch.distributed.tensor and a stub torch.distributed.fsdp (1.13's does not import on Python
  3.11), float8 dtypes as placeholders (named in tables of dtypes, never used by float32 exports).

Exporter workarounds (each would otherwise give a file onnxruntime refuses or that runs at one size):
- aten::bitwise_and (bool masks combined with &) has no export: written as And, as torch 2 does;
- torch.where(mask, tensor, python_float) is written with a double: the scalar is typed as the
  tensor (eager PyTorch's result type);
- the masks' vmap bakes the traced sequence length into the graph: they are built by broadcasting;
- (in arch_hf.py) a DynamicCache filled from tuples concatenates each past onto an empty 1-D tensor,
  an invalid Concat: the cache layers are given the pasts directly.

    import hf_compat
    transformers = hf_compat.load()  # None when transformers is not installed (see requirements-hf.txt)
"""
import importlib.metadata as metadata
import os
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.environ.get("REFIT_HF_SITE", os.path.join(HERE, "..", "tmp", "pypi", "hf"))

_REPORTED = {"torch": "2.1.0", "tokenizers": "0.22.1", "huggingface-hub": "0.36.0", "huggingface_hub": "0.36.0"}


def _patch_torch():
    def disable(fn=None, recursive=True):
        return (lambda f: f) if fn is None else fn

    if not hasattr(torch, "compiler"):
        torch.compiler = types.SimpleNamespace(disable=disable, is_compiling=lambda: False, is_dynamo_compiling=lambda: False)
    if not hasattr(torch, "_dynamo"):
        torch._dynamo = types.SimpleNamespace(allow_in_graph=lambda f: f, is_compiling=lambda: False, disable=disable)
    if not hasattr(torch, "vmap"):
        from functorch import vmap

        torch.vmap = vmap
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64"):
        if not hasattr(torch, name):
            setattr(torch, name, torch.uint8)
    pytree = torch.utils._pytree
    if not hasattr(pytree, "register_pytree_node"):
        pytree.register_pytree_node = lambda cls, flatten, unflatten, **_: pytree._register_pytree_node(cls, flatten, unflatten)
    sys.modules.setdefault("torch.distributed.tensor", types.ModuleType("torch.distributed.tensor"))
    # torch 1.13's FSDP does not import on Python 3.11; transformers only asks whether a module is one
    fsdp = types.ModuleType("torch.distributed.fsdp")
    fsdp.FullyShardedDataParallel = type("FullyShardedDataParallel", (), {})
    sys.modules.setdefault("torch.distributed.fsdp", fsdp)
    torch.distributed.fsdp = sys.modules["torch.distributed.fsdp"]
    if not hasattr(torch, "compile"):
        torch.compile = lambda fn=None, **_: (lambda f: f) if fn is None else fn
    # scripted helpers (GPT-BigCode's masked softmax) run as Python and are traced like the rest
    torch.jit.script = lambda fn=None, *_, **__: fn
    # torch 1.13's exporter has no aten::bitwise_and (sliding-window masks combine bool masks with
    # &); on bools it is ONNX And, which torch 2's exporter writes for it.
    torch.onnx.register_custom_op_symbolic("aten::bitwise_and", lambda g, a, b: g.op("And", a, b), 9)
    # torch.where(mask, tensor, python_float) (the eager attention masks' finfo.min): torch 1.13's
    # exporter writes the float as a double, which onnxruntime refuses beside a float tensor; eager
    # PyTorch gives the tensor's dtype, so the scalar becomes a tensor of that dtype first.
    where = torch.where

    def typed_where(cond, *ab, **kw):
        if len(ab) == 2:
            a, b = ab
            if isinstance(b, (int, float)) and torch.is_tensor(a) and a.is_floating_point():
                b = torch.tensor(b, dtype=a.dtype, device=a.device)
            elif isinstance(a, (int, float)) and torch.is_tensor(b) and b.is_floating_point():
                a = torch.tensor(a, dtype=b.dtype, device=b.device)
            ab = (a, b)
        return where(cond, *ab, **kw)

    torch.where = typed_where


def _patch_metadata():
    real = metadata.version

    def version(name):
        if name == "torchvision":
            raise metadata.PackageNotFoundError(name)
        return _REPORTED.get(name) or real(name)

    metadata.version = version


def load():
    """transformers, importable beside torch 1.13; None when it is not installed."""
    if os.path.isdir(SITE) and SITE not in sys.path:
        sys.path.insert(0, SITE)
    _patch_torch()
    _patch_metadata()
    try:
        import transformers
    except ImportError:
        return None
    _broadcast_masks()
    return transformers


def _broadcast_masks():
    """The masks' index functions by broadcasting instead of vmap: functorch's vmap under
    torch.onnx's tracing bakes the traced sequence length into the graph (a Reshape to [8, 1]: the
    file then runs at that length only). The mask functions are elementwise in their indices, so
    broadcasting b, h, q and kv against each other gives the same [B, H, Q, KV] (or [Q, KV]) mask."""
    from transformers import masking_utils

    def for_bhqkv(mask_function, bh_indices=True):
        def f(b, h, q, kv):
            if bh_indices:
                return mask_function(b[:, None, None, None], h[None, :, None, None], q[None, None, :, None], kv[None, None, None, :])
            return mask_function(b, h, q[:, None], kv[None, :])
        return f

    masking_utils._vmap_for_bhqkv = for_bhqkv
