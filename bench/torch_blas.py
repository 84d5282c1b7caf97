"""Which BLAS Debian's PyTorch calls. Debian builds torch against the generic libblas.so.3, which
points at the reference (netlib) implementation unless OpenBLAS is installed; there a
[1024, 256] x [256, 704] product took 130 ms against 2-5 ms with OpenBLAS (session 18), so every
PyTorch time that involves a matrix product would be meaningless. The PyTorch sides of the benches
call require_fast_blas() before timing anything."""
import os

REFERENCE = "/blas/libblas.so"  # Debian's reference BLAS lives in .../x86_64-linux-gnu/blas/


def blas_libraries():
    """The BLAS shared objects mapped into this process."""
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "blas" in line.lower() and "/" in line})


def require_fast_blas():
    import torch
    torch.mm(torch.ones(2, 2), torch.ones(2, 2))  # make sure the BLAS is loaded
    libs = blas_libraries()
    if any(REFERENCE in os.path.realpath(p) for p in libs) or not libs:
        raise SystemExit(f"PyTorch calls the reference BLAS here ({', '.join(libs) or 'none mapped'}): its matrix products run "
                         "tens of times slower than with OpenBLAS, which would make a comparison meaningless. "
                         "Install OpenBLAS first: apt-get install -y libopenblas0-pthread")
    return libs
