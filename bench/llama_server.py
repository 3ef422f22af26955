"""llama.cpp's own ``llama-server`` for the load benchmark: built once from source, started per run.

The source is the llama.cpp that the ``llama-cpp-python`` sdist vendors (PyPI is reachable where GitHub
may not be), at the version the ``bench`` extra would install, built with the same portable CPU flags as
the Makefile's ``LLAMA_CMAKE_ARGS`` so it is the same peer ``bench.run`` measures through the bindings.
The binary is cached outside the repository, keyed by version and flags, and built only when missing:

    python -m bench.llama_server          # build (10-20 minutes on 2 cores) and print the binary's path
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

import aiohttp

DIST = "llama-cpp-python"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "parley" / "llama-server"
BUILD_JOBS = 2
READY_TIMEOUT = 600.0  # seconds for a server to load its model (Parley may import it first)


def cmake_args(cpuinfo: str | None = None) -> list[str]:
    """The Makefile's ``LLAMA_CMAKE_ARGS`` (AVX2 always, AVX-512 with VNNI where the CPU lists
    avx512_vnni), plus what a lone, offline ``llama-server`` needs. Unlike the Makefile, AVX-VNNI and
    AVX512-BF16 each need their own flag: an AMD EPYC (Zen 4) lists avx512_vnni but not avx_vnni, and a
    build with ``GGML_AVX_VNNI`` dies there of SIGILL on its first matrix product (VEX ``vpdpbusd``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    cpu = set(cpuinfo.split())
    avx512 = ["-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON"] if "avx512_vnni" in cpu else ["-DGGML_AVX512=OFF"]
    if "avx512_vnni" in cpu and "avx512_bf16" in cpu:
        avx512.append("-DGGML_AVX512_BF16=ON")
    if "avx_vnni" in cpu:
        avx512.append("-DGGML_AVX_VNNI=ON")
    return [
        *["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", *avx512],
        *["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON"],
        "-DCMAKE_BUILD_TYPE=Release",
        # One self-contained file to cache (no libllama.so / libggml*.so beside it).
        "-DBUILD_SHARED_LIBS=OFF",
        # Offline: no HTTPS model downloads, and no fetching the web UI from a Hugging Face bucket (the
        # server then runs without its UI, which the benchmark does not use).
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
    ]


def wanted_version() -> str:
    """The installed llama-cpp-python's version (what ``bench.run`` measures), else the newest 0.3.x,
    the range the ``bench`` extra pins."""
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        pass
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", DIST], capture_output=True, text=True, check=True
    ).stdout
    listed = next(line for line in out.splitlines() if line.startswith("Available versions:"))
    versions = [v.strip() for v in listed.split(":", 1)[1].split(",")]
    return next(v for v in versions if v.startswith("0.3."))  # pip lists the newest first


def binary_path(version: str, args: list[str]) -> Path:
    flags = hashlib.sha256(" ".join(args).encode()).hexdigest()[:10]
    return CACHE / f"{version}-{flags}" / "llama-server"


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({result.returncode}); see {log}")


def ensure_built(version: str | None = None) -> Path:
    """The cached ``llama-server`` binary, built from the sdist's vendored llama.cpp when missing."""
    version = version or wanted_version()
    args = cmake_args()
    binary = binary_path(version, args)
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    log = binary.parent / "build.log"
    print(f"[llama-server] building llama.cpp from {DIST} {version}; log: {log}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    # The build tree stays in a temporary folder: only the binary is kept.
    with tempfile.TemporaryDirectory(prefix="build-", dir=binary.parent) as tmp_name:
        tmp = Path(tmp_name)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        _run([*pip, f"{DIST}=={version}", "-d", str(tmp)], log)
        sdist = next(tmp.glob("*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        root = next(p for p in tmp.iterdir() if p.is_dir())
        source, build = root / "vendor" / "llama.cpp", tmp / "build"
        _run(["cmake", "-S", str(source), "-B", str(build), *args], log)
        _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(BUILD_JOBS)], log)
        partial = binary.with_suffix(".partial")
        shutil.copy2(build / "bin" / "llama-server", partial)
        os.replace(partial, binary)  # never a half-copied binary under the cached name
    print(f"[llama-server] built in {time.perf_counter() - started:.0f} s: {binary}", file=sys.stderr, flush=True)
    return binary


def server_version(binary: Path) -> str:
    """``llama-server --version``'s line (build number and commit)."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False, timeout=30)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("version")]
    return lines[0].removeprefix("version: ") if lines else "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) * 1024


async def wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    """Until ``GET url`` answers 200 (llama-server answers 503 while it loads the model, Parley's
    /readyz until its model and Redis are)."""
    async with aiohttp.ClientSession() as session:
        while proc.returncode is None:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    rc = proc.returncode
    # A negative code is a signal: SIGILL means a build for vector instructions this CPU lacks.
    raise RuntimeError(f"it exited ({signal.Signals(-rc).name if rc < 0 else rc}) before it was ready")


async def stop(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def serve_process(
    cmd: list[str], ready_url: str, *, env: dict[str, str] | None = None, cwd: Path | None = None, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A server process from its start until ``ready_url`` answers 200 to its end (SIGTERM, then SIGKILL),
    its output in ``log``."""
    out = await asyncio.to_thread(open, log, "wb")
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            try:
                async with asyncio.timeout(READY_TIMEOUT):
                    await wait_ready(ready_url, proc)
            except (TimeoutError, RuntimeError) as exc:
                output = await asyncio.to_thread(log.read_text, errors="replace")
                tail = "".join(output.splitlines(keepends=True)[-20:])
                raise RuntimeError(f"{Path(cmd[0]).name} did not get ready ({exc or 'timed out'}):\n{tail}") from exc
            yield proc
        finally:
            await stop(proc)
    finally:
        out.close()


@asynccontextmanager
async def serve(
    gguf: Path,
    *,
    threads: int,
    ctx: int,
    parallel: int,
    log: Path,
    binary: Path | None = None,
    extra: Sequence[str] = (),
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """``llama-server`` on a free local port with ``parallel`` slots of ``ctx`` positions each (the server
    splits ``-c`` evenly across its slots), continuous batching on, ``extra`` arguments last (they win);
    yields (base URL, process)."""
    binary = binary or ensure_built()
    port = free_port()
    cmd = [
        str(binary),
        *["-m", str(gguf), "--host", "127.0.0.1", "--port", str(port)],
        *["-t", str(threads), "-tb", str(threads), "-c", str(ctx * parallel), "-np", str(parallel)],
        "--cont-batching",
        # Each slot keeps its conversation's cache and a follow-up reuses the longest common prefix;
        # say so rather than rely on the default.
        "--cache-prompt",
        "--no-webui",
        *extra,
    ]
    base = f"http://127.0.0.1:{port}"
    async with serve_process(cmd, f"{base}/health", log=log) as proc:
        yield base, proc


def find_gguf(name: str) -> Path:
    """The GGUF behind a built-in model's name (as ``bench.run --gguf`` finds it: in its package, or
    among the assembled sources beside the models), else ``name`` as a path."""
    from engine.model.catalog import SOURCES_DIR, builtin_gguf, find_builtin
    from engine.runtime.settings import load_settings

    builtin = find_builtin(name)
    path = builtin_gguf(builtin, load_settings().models_path / SOURCES_DIR) if builtin else Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF for {name!r}: not a built-in model's name nor a file")
    return path


if __name__ == "__main__":
    print(ensure_built())
