"""The code sandbox keeps its hands off the disk.

During training the programs are written by the policy being optimised: one that edits the test data, the
verifier or a checkpoint is reward hacking, and one that deletes files loses data. Every program must leave
the disk exactly as it was (except its own temp folder), whatever it tries, and the verdict must still be
the one its output deserves. Where this machine cannot contain writes, the tests that need containment skip
with the reason sandbox_protections() gives, and the test of the fallback still runs.
"""
import json
import os
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import verifier.sandbox  # noqa: E402
from reward import code_reward, run_python, sandbox_protections  # noqa: E402

PROT = sandbox_protections()
needs_containment = pytest.mark.skipif(
    not PROT["read_only_filesystem"],
    reason="file writes are not contained on this machine: " + PROT["read_only_filesystem_how"])
IS_ROOT = hasattr(os, "getuid") and os.getuid() == 0
STDIO = {"stdio": [{"input": "21\n", "output": "42\n"}]}
REFUSALS = {"EROFS", "EPERM", "EACCES"}


def py(code):
    return f"Solution:\n```python\n{code}\n```\n"


def snapshot(*roots) -> dict:
    """Everything a write, delete, rename, chmod, chown or utime would change, for every path below roots."""
    out = {}
    for root in roots:
        for p in [Path(root), *sorted(Path(root).rglob("*"))]:
            st = os.lstat(p)
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[str(p)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ino, data)
    return out


def make_victim(base: Path, world_writable=False) -> Path:
    """A small tree standing in for test data, the verifier and a checkpoint."""
    v = base / "victim"
    (v / "sub" / "deeper").mkdir(parents=True)
    (v / "data.txt").write_text('{"input": "21", "output": "42"}\n')
    (v / "verifier.py").write_text((ROOT / "reward.py").read_text()[:4000])
    (v / "sub" / "ckpt.bin").write_bytes(os.urandom(4096))
    (v / "sub" / "deeper" / "notes.txt").write_text("keep me\n")
    if world_writable:                      # only the namespace can stop a write here, not permissions
        for p in [v, *v.rglob("*")]:
            p.chmod(0o777 if p.is_dir() else 0o666)
    return v


@pytest.fixture
def victim(tmp_path):
    return make_victim(tmp_path)


# An attack's body ends in the write that must be refused. The wrapper reports the refusal (or "ESCAPED")
# on stderr, then prints the right answer, so the verdict is 1.0 exactly when the output is right.
PRELUDE = '''
import ctypes, errno, os, shutil, subprocess, sys
V, R, T = {V!r}, {R!r}, {T!r}
libc = ctypes.CDLL(None, use_errno=True)
def check(rc):               # ctypes calls report failure through errno, like the os module would
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def quietly(fn, *a, **k):    # a step that may fail; the final write decides
    try:
        fn(*a, **k)
    except Exception:
        pass
'''
CAUGHT = '''
def attack():
{body}
try:
    attack()
    sys.stderr.write("ESCAPED\\n")
except OSError as e:
    sys.stderr.write("refused %s\\n" % errno.errorcode.get(e.errno, e.errno))
print(int(input()) * {factor})
'''
UNCAUGHT = '''
{body}
print(int(input()) * {factor})
'''

ATTACKS = {
    "write a new file": "open(V + '/new.txt', 'w').write('x')",
    "append to test data": "open(V + '/data.txt', 'a').write('x')",
    "truncate the verifier": "open(V + '/verifier.py', 'w').close()",
    "overwrite a checkpoint in place": "fd = os.open(V + '/sub/ckpt.bin', os.O_WRONLY)\nos.write(fd, b'0' * 16)",
    "write into the repository": "open(R, 'w').write('x')",
    "write into /tmp": "open(T, 'w').write('x')",
    "delete a file": "os.remove(V + '/data.txt')",
    "delete a tree": "shutil.rmtree(V + '/sub')",
    "rename": "os.rename(V + '/data.txt', V + '/moved.txt')",
    "mkdir": "os.mkdir(V + '/newdir')",
    "hard link": "os.link(V + '/data.txt', V + '/link.txt')",
    "symlink": "os.symlink('/etc/passwd', V + '/sym')",
    "chmod": "os.chmod(V + '/data.txt', 0o777)",
    "chown": "os.chown(V + '/data.txt', 1234, 1234)",
    "utime": "os.utime(V + '/data.txt', (0, 0))",
    "remount rw with mount(8), then write": (
        "for args in (['-o', 'remount,rw', '/'], ['-o', 'remount,bind,rw', V], ['--bind', V, V]):\n"
        "    quietly(subprocess.run, ['mount', *args], capture_output=True)\n"
        "open(V + '/new.txt', 'w').write('x')"),
    "remount rw with mount(2), then write": (
        "for p in (b'/', V.encode(), os.path.dirname(V).encode()):\n"
        "    quietly(lambda: check(libc.mount(None, p, None, ctypes.c_ulong(32 | 4096), None)))\n"
        "open(V + '/new.txt', 'w').write('x')"),
    "clear read-only with mount_setattr, then write": (
        "attr = (ctypes.c_uint64 * 4)(0, 1 | 4, 0, 0)\n"
        "quietly(lambda: check(libc.syscall(ctypes.c_long(442), ctypes.c_long(-100), b'/', "
        "ctypes.c_long(0x8000), attr, ctypes.c_long(32))))\n"
        "open(V + '/new.txt', 'w').write('x')"),
    "nested user+mount namespace, remount, then write": (
        "check(libc.unshare(0x10000000 | 0x00020000))\n"           # CLONE_NEWUSER | CLONE_NEWNS
        "for p in (b'/', V.encode()):\n"
        "    quietly(lambda: check(libc.mount(None, p, None, ctypes.c_ulong(32 | 4096), None)))\n"
        "quietly(lambda: check(libc.umount2(os.getcwd().encode(), 2)))\n"
        "open(V + '/new.txt', 'w').write('x')"),
    "unshare(1) -Urm, then remount": (
        "r = subprocess.run(['unshare', '-Urm', 'sh', '-c', 'mount -o remount,bind,rw / ; touch ' + V + '/new.txt'],"
        " capture_output=True)\n"
        "if not os.path.exists(V + '/new.txt'):\n"
        "    raise OSError(errno.EPERM, 'refused')"),
    "write a sysctl (same value) through /proc": (
        "p = '/proc/sys/vm/swappiness'\nv = open(p).read()\nopen(p, 'w').write(v)"),
}


def attack_program(body, victim, factor=2, caught=True):
    nonce = secrets.token_hex(6)
    paths = {"V": str(victim), "R": str(ROOT / f"sdz_escape_{nonce}"), "T": f"/tmp/sdz_escape_{nonce}"}
    if caught:
        tail = CAUGHT.format(body=textwrap.indent(body, "    "), factor=factor)
    else:
        tail = UNCAUGHT.format(body=body, factor=factor)
    return PRELUDE.format(**paths) + tail, paths


def assert_refused(r, paths):
    """The program ran to its answer, its write was refused by the kernel, and nothing appeared anywhere."""
    leaked = [p for p in (paths["R"], paths["T"]) if os.path.lexists(p)]
    for p in leaked:
        os.remove(p)
    assert not leaked, leaked
    assert r["rc"] == 0 and r["stdout"] == "42\n", r
    words = r["stderr"].split()
    assert words[:1] == ["refused"] and words[1] in REFUSALS, r["stderr"]


@needs_containment
@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_leaves_disk_unchanged_and_verdict_follows_output(name, victim):
    before = snapshot(victim)
    src, paths = attack_program(ATTACKS[name], victim)
    assert_refused(run_python(src, stdin="21\n"), paths)
    assert snapshot(victim) == before, name
    assert code_reward(py(src), STDIO) == 1.0, name               # right answer printed: pass
    assert snapshot(victim) == before, name


@needs_containment
@pytest.mark.parametrize("name", ["write a new file", "delete a tree", "remount rw with mount(2), then write"])
def test_attack_with_wrong_output_fails(name, victim):
    before = snapshot(victim)
    src, _ = attack_program(ATTACKS[name], victim, factor=3)
    assert code_reward(py(src), STDIO) == 0.0                     # wrong answer printed: fail
    src, _ = attack_program(ATTACKS[name], victim, caught=False)
    assert code_reward(py(src), STDIO) == 0.0                     # crashed on the refused write: fail
    assert snapshot(victim) == before


@needs_containment
def test_harness_solution_cannot_touch_disk(victim):
    """HumanEval-shaped: a solution that vandalises the disk at import time still gets the verdict its
    function deserves, and the disk is unchanged."""
    vandal = (f"import os, shutil\nV = {str(victim)!r}\n"
              "for fn in (lambda: open(V + '/data.txt', 'w').write('{}'), lambda: shutil.rmtree(V + '/sub'),\n"
              "           lambda: os.remove(V + '/verifier.py')):\n"
              "    try:\n        fn()\n    except OSError:\n        pass\n")
    test = {"entry_point": "double",
            "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-3) == -6\n"}
    before = snapshot(victim)
    assert code_reward(py(vandal + "def double(x):\n    return 2 * x\n"), test) == 1.0
    assert code_reward(py(vandal + "def double(x):\n    return x\n"), test) == 0.0
    assert snapshot(victim) == before


@pytest.fixture
def submounts(victim, tmp_path):
    """A tmpfs and a bind mount below the victim: a read-only parent with writable mounts underneath is not
    contained, so every mount must be read-only. Needs permission to mount (root)."""
    src = tmp_path / "bind_src"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"w" * 100)
    mounts = [(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs"], victim / "tmpfs"),
              (["mount", "--bind", str(src)], victim / "bind")]
    if not shutil.which("mount"):
        pytest.skip("the mount tool is not installed")
    done = []
    try:
        for cmd, target in mounts:
            target.mkdir()
            r = subprocess.run([*cmd, str(target)], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"mounting is not permitted here ({' '.join(cmd[:3])}: {r.stderr.strip()})")
            done.append(target)
        (victim / "tmpfs" / "scratch_of_someone_else.txt").write_text("keep\n")
        yield victim, src
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


@needs_containment
@pytest.mark.parametrize("body", [
    "open(V + '/tmpfs/new.txt', 'w').write('x')",
    "os.remove(V + '/tmpfs/scratch_of_someone_else.txt')",
    "open(V + '/bind/weights.bin', 'r+b').write(b'0')",
    "os.remove(V + '/bind/weights.bin')",
    "os.chmod(V + '/bind', 0o700)",
    "check(libc.mount(None, (V + '/bind').encode(), None, ctypes.c_ulong(32 | 4096), None))",
    "check(libc.umount2((V + '/tmpfs').encode(), 2))",
], ids=["tmpfs-write", "tmpfs-delete", "bind-overwrite", "bind-delete", "bind-chmod", "bind-remount-rw",
        "tmpfs-unmount"])
def test_submounts_are_read_only_too(submounts, body):
    victim, src = submounts
    before = snapshot(victim, src)
    prog, paths = attack_program(body, victim)
    assert_refused(run_python(prog, stdin="21\n"), paths)
    assert code_reward(py(prog), STDIO) == 1.0
    assert snapshot(victim, src) == before


@needs_containment
@pytest.mark.skipif(not IS_ROOT, reason="creating a device node needs root")
def test_device_nodes_outside_dev_are_refused(victim):
    """uid 0 needs no capability to open a root-owned block device, and a read-only mount does not stop writes
    to device nodes: the sandbox mounts everything nodev. A harmless /dev/null twin stands in for /dev/sda."""
    node = victim / "twin_of_dev_null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    src, paths = attack_program("open(V + '/twin_of_dev_null', 'w').write('x')", victim)
    assert_refused(run_python(src, stdin="21\n"), paths)


@needs_containment
def test_own_folder_and_devices_stay_usable():
    """Honest programs keep working: scratch files in cwd, tempfile (TMPDIR), /dev/null, multiprocessing locks
    (/dev/shm), subprocesses."""
    code = textwrap.dedent('''
        import multiprocessing, os, subprocess, sys, tempfile
        n = int(input())
        with open("scratch.txt", "w") as f:
            f.write(str(n))
        os.makedirs("cache/a", exist_ok=True)
        os.rename("scratch.txt", "cache/a/s.txt")
        with tempfile.NamedTemporaryFile("w+", delete=False) as f:
            f.write("t")
        assert os.path.dirname(f.name) == os.getcwd()
        os.chmod(f.name, 0o600)
        os.remove(f.name)
        with open(os.devnull, "w") as f:
            f.write("discarded")
        lock = multiprocessing.Lock()
        with lock:
            pass
        subprocess.run(["true"], stdout=subprocess.DEVNULL, check=True)
        print(2 * int(open("cache/a/s.txt").read()))
    ''')
    r = run_python(code, stdin="21\n")
    assert r["rc"] == 0 and r["stdout"] == "42\n", r
    assert code_reward(py(code), STDIO) == 1.0


@needs_containment
def test_per_mount_fallback_for_old_kernels(monkeypatch, victim):
    """Kernels before 5.12 lack mount_setattr: the launcher then bind-remounts each mount point. Forced here."""
    monkeypatch.setattr(verifier.sandbox, "_FS_CONTAINMENT", "remount")
    before = snapshot(victim)
    for name in ("write a new file", "delete a tree", "remount rw with mount(2), then write"):
        src, paths = attack_program(ATTACKS[name], victim)
        assert_refused(run_python(src, stdin="21\n"), paths)
    r = run_python("open('s', 'w').write('7')\nprint(open('s').read())")
    assert r["rc"] == 0 and r["stdout"] == "7\n", r
    assert snapshot(victim) == before


@needs_containment
def test_fresh_proc_shows_only_the_program():
    r = run_python("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert r["rc"] == 0
    if PROT["pid_namespace"]:
        assert r["stdout"] == "[1]\n", r


def test_report_says_whether_writes_are_contained():
    assert isinstance(PROT["read_only_filesystem"], bool) and PROT["read_only_filesystem_how"]
    assert PROT["capabilities_dropped"] == PROT["read_only_filesystem"]
    if PROT["read_only_filesystem"]:
        assert PROT["read_only_filesystem_how"].startswith("mount namespace")
        assert PROT["user_namespace"] == PROT["read_only_filesystem_how"].endswith("inside a user namespace")


def test_without_namespaces_one_warning_and_nothing_else_changes(monkeypatch, capsys):
    """No unshare tool: writes are not contained; the first call warns once, the report says why, and honest
    programs are graded as before."""
    real_which = shutil.which
    monkeypatch.setattr(verifier.sandbox, "_SETUP", None)
    monkeypatch.setattr(verifier.sandbox.shutil, "which", lambda name, *a, **k: None if name == "unshare"
                        else real_which(name, *a, **k))
    capsys.readouterr()
    p = sandbox_protections()
    assert p["read_only_filesystem"] is False and "unshare" in p["read_only_filesystem_how"]
    assert not p["network_namespace"] and not p["capabilities_dropped"]
    r = run_python("print(int(input()) * 2)", stdin="21")
    assert r["rc"] == 0 and r["stdout"] == "42\n"
    assert code_reward(py("print(int(input()) * 2)"), STDIO) == 1.0
    assert code_reward(py("print(int(input()) * 3)"), STDIO) == 0.0
    sandbox_protections()
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "NOT contained" in err and "unshare" in err, err


# ------------------------------------------------------------------ unprivileged: the user-namespace path
_UNPRIV = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import reward
victim, body, out = sys.argv[2], sys.argv[3], {}
out["prot"] = reward.sandbox_protections()
if out["prot"]["read_only_filesystem"]:
    out["attack"] = reward.run_python(body, stdin="21\n")
    out["scratch"] = reward.run_python("open('s', 'w').write('7')\nprint(open('s').read())")
print("RESULT" + json.dumps(out))
'''


@pytest.mark.skipif(not (IS_ROOT and shutil.which("setpriv") and shutil.which("unshare")),
                    reason="needs root (to become another user) and setpriv/unshare")
def test_unprivileged_user_gets_containment_from_a_user_namespace():
    """As uid 65534 (no capabilities anywhere) the sandbox must use `unshare --user --map-root-user --mount`.
    The victim is world-writable, so only the namespace can stop the write."""
    base = Path(tempfile.mkdtemp(prefix="sdz_unpriv_"))
    try:
        base.chmod(0o755)
        victim = make_victim(base, world_writable=True)
        # This interpreter may live under a directory other users cannot enter (/root/.pyenv): show its
        # prefix to them through a bind mount in a private mount namespace of this test.
        prefix = os.path.realpath(sys.base_prefix)
        view = base / "python"
        view.mkdir()
        exe = view / os.path.relpath(os.path.realpath(sys.executable), prefix)
        real = [os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)]
        # The repository may sit under a directory uid 65534 cannot enter either (CI clones into a
        # mode-700 mktemp folder): show it the same way.
        repo = base / "repo"
        repo.mkdir()
        pypath = [str(view / os.path.relpath(p, prefix)) if p.startswith(prefix + os.sep) else
                  str(repo / os.path.relpath(p, ROOT)) if p == str(ROOT) or p.startswith(str(ROOT) + os.sep)
                  else p for p in real]
        src, paths = attack_program("open(V + '/new.txt', 'w').write('x')\nos.remove(V + '/data.txt')", victim)
        script = base / "unpriv.py"
        script.write_text(_UNPRIV)
        script.chmod(0o644)
        inner = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-i", "PATH=/usr/bin:/bin",
                 f"PYTHONPATH={os.pathsep.join(pypath)}", "HOME=/tmp", str(exe), str(script), str(repo),
                 str(victim), src]
        shell = (f'mount --bind {shlex.quote(prefix)} {shlex.quote(str(view))} && '
                 f'mount --bind {shlex.quote(str(ROOT))} {shlex.quote(str(repo))} && exec "$@"')
        before = snapshot(victim)
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, "sh", *inner],
                           capture_output=True, text=True, timeout=120)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")]
        if not lines:
            pytest.skip(f"could not run Python as uid 65534 here: {r.stderr.strip()[-300:]}")
        out = json.loads(lines[-1][len("RESULT"):])
        prot = out["prot"]
        if not prot["read_only_filesystem"]:
            pytest.skip("unprivileged file writes are not contained on this machine: "
                        + prot["read_only_filesystem_how"])
        assert prot["user_namespace"] and not prot["running_as_root"], prot
        assert_refused(out["attack"], paths)
        assert out["scratch"]["stdout"] == "7\n", out["scratch"]
        assert snapshot(victim) == before
    finally:
        shutil.rmtree(base, ignore_errors=True)
