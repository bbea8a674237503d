"""Make the CUDA-only torchvision wheel importable beside a CPU-only torch.

Why: the torchvision 0.28.0 wheel is built against CUDA torch. Its `_C.so` and
`image.so` list `libc10_cuda.so` and `libtorch_cuda.so` as dependencies, which a
CPU torch does not ship, so `import torchvision` fails with
"operator torchvision::nms does not exist" (and transformers then fails to load
BERT because it imports torchvision).

What: only when torch is a CPU build *and* the import actually fails, this script
compiles two tiny stand-in libraries that define the CUDA symbols torchvision
references (every function aborts if it is ever called; nothing on a CPU path
calls them), and installs a `.pth` import hook that loads them, with the CUDA
runtime that torchvision bundles, just before torchvision is first imported.

Usage: `python tools/torchvision_cpu_fix.py` with the venv's python. Idempotent.
"""
import subprocess, sys, sysconfig, textwrap
from pathlib import Path

SHIM_DIR_NAME = "_tlcourse_cuda_stubs"
HOOK_MODULE = "_tlcourse_torchvision_hook"


def torchvision_imports() -> tuple[bool, str]:
    "Try `import torchvision` (and one op) in a fresh interpreter; return (ok, error text)."
    code = "import torchvision, torch; torchvision.ops.nms(torch.zeros(1,4), torch.zeros(1), 0.5)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]


def cuda_symbols(libs: list[Path]) -> tuple[set[str], set[str]]:
    "Undefined at::cuda / c10::cuda symbols of `libs`, split into (functions, data)."
    funcs, data = set(), set()
    for lib in libs:
        out = subprocess.run(["nm", "-D", "--undefined-only", str(lib)], capture_output=True, text=True, check=True).stdout
        mangled = [l.split()[-1] for l in out.splitlines() if l.strip()]
        mangled = [m for m in mangled if "@" not in m and ("3c104cuda" in m or "2at4cuda" in m)]
        if not mangled: continue
        demangled = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True, check=True).stdout.splitlines()
        for m, d in zip(mangled, demangled): (funcs if "(" in d else data).add(m)
    return funcs, data


def stub_source(funcs: set[str], data: set[str]) -> str:
    "C source that defines each function as an abort and each data symbol as a null pointer."
    lines = ["#include <stdio.h>", "#include <stdlib.h>",
             "static void tlcourse_no_cuda(const char *s) { fprintf(stderr, \"tlcourse CUDA stub called: %s (this torch is a CPU build)\\n\", s); abort(); }"]
    for i, f in enumerate(sorted(funcs)):
        lines.append(f'void stub_f{i}(void) __asm__("{f}"); void stub_f{i}(void) {{ tlcourse_no_cuda("{f}"); }}')
    for i, d in enumerate(sorted(data)):
        lines.append(f'void *stub_d{i} __asm__("{d}") = 0;')
    return "\n".join(lines) + "\n"


HOOK_SOURCE = textwrap.dedent(f'''
    """Installed by tlcourse's tools/torchvision_cpu_fix.py: loads CUDA stand-ins before torchvision."""
    import sys

    class _PreloadCudaStubs:
        def find_spec(self, name, path=None, target=None):
            if name != "torchvision": return None
            sys.meta_path.remove(self)
            import ctypes, glob, importlib.util, os
            spec = importlib.util.find_spec("torchvision")
            libs_dir = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "torchvision.libs")
            stub_dir = os.path.join(os.path.dirname(__file__), "{SHIM_DIR_NAME}")
            import torch  # its own libraries first, so the stand-ins resolve against them
            for lib in sorted(glob.glob(os.path.join(libs_dir, "libcudart*.so*"))) + [
                    os.path.join(stub_dir, "libc10_cuda.so"), os.path.join(stub_dir, "libtorch_cuda.so")]:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            return None

    if not any(type(f).__name__ == "_PreloadCudaStubs" for f in sys.meta_path):
        sys.meta_path.insert(0, _PreloadCudaStubs())
''')


def install() -> int:
    import importlib.util
    import torch
    ok, err = torchvision_imports()
    if ok:
        print("torchvision: imports fine, no fix needed"); return 0
    if torch.version.cuda is not None or "torchvision::nms does not exist" not in err:
        print(f"torchvision: fails for a reason this fix does not address: {err}", file=sys.stderr); return 1
    spec = importlib.util.find_spec("torchvision")
    tv_dir = Path(spec.origin).parent
    funcs, data = cuda_symbols([tv_dir / "_C.so", tv_dir / "image.so"])
    site = Path(sysconfig.get_paths()["purelib"])
    stub_dir = site / SHIM_DIR_NAME
    stub_dir.mkdir(exist_ok=True)
    src = stub_dir / "cuda_stubs.c"
    src.write_text(stub_source(funcs, data))
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wl,-soname,libc10_cuda.so", "-o", str(stub_dir / "libc10_cuda.so"), str(src)], check=True)
    empty = stub_dir / "empty.c"
    empty.write_text("int tlcourse_torch_cuda_stub;\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libtorch_cuda.so", "-o", str(stub_dir / "libtorch_cuda.so"), str(empty)], check=True)
    (site / f"{HOOK_MODULE}.py").write_text(HOOK_SOURCE)
    (site / f"{HOOK_MODULE}.pth").write_text(f"import {HOOK_MODULE}\n")
    ok, err = torchvision_imports()
    print(f"torchvision: CPU stand-ins for {len(funcs)} CUDA functions and {len(data)} data symbols installed; import {'works' if ok else 'still fails: ' + err}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(install())
