"""The sandbox's child process: confine itself, then run one untrusted Python program.

Started by `vishwam_core.evaluate.sandbox` as `python -I _sandbox_child.py SPEC_JSON` with its working
directory already the run's temp dir. Standard library only, and no vishwam imports: `-I` ignores
PYTHONPATH, so this file must stand alone.

Two modes, chosen by the parent:
- "namespaces" (Linux with user namespaces): new user, mount, network and IPC namespaces; every mount
  but the temp dir remounted read-only; no network interface at all (not even loopback); then execve
  into a fresh interpreter, which drops every capability (the uid inside is not 0), with
  no_new_privs set so no setuid binary can regain them. Read-only flags set here are locked for any
  namespace the program might create itself, so it cannot remount them writable.
- "python": where namespaces are unavailable, an audit hook refuses writes outside the temp dir,
  sockets, subprocesses, forks and ctypes. Best effort: it guards Python code, not native code.

Both modes set RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_FSIZE and RLIMIT_NPROC before the program runs.
RLIMIT_NPROC does not bind a process whose real uid is root (the kernel exempts it, user namespace or
not), so on x86_64 and aarch64 a seccomp filter also refuses fork, vfork and every clone that is not
a thread.
Exit code SETUP_FAILED with a message on stderr means the confinement itself could not be set up.
"""

import ctypes
import json
import os
import resource
import sys

SETUP_FAILED = 97

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
CLONE_THREAD = 0x00010000
# audit arch -> (clone, fork, vfork, clone3); aarch64 has no fork/vfork syscalls (never matched).
SYSCALLS = {0xC000003E: (56, 57, 58, 435), 0xC00000B7: (220, 0xFFFFFFFF, 0xFFFFFFFF, 435)}
# Per-mount flags a bind remount must repeat: in a user namespace the kernel locks them.
KEPT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}


def fail(message):
    sys.stderr.write(f"sandbox setup failed: {message}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def unescape(field):
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def confine_namespaces(workdir):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]

    def mount(source, target, flags):
        src = source.encode() if source else None
        if libc.mount(src, target.encode(), None, flags, None) != 0:
            fail(f"mount {target}: {os.strerror(ctypes.get_errno())}")

    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) != 0:
        fail(f"unshare: {os.strerror(ctypes.get_errno())}")
    inner = uid or 1000  # never 0 inside: the execve below then drops every capability
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{inner} {uid} 1"),
        ("gid_map", f"{inner} {gid} 1"),
    ):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    mount(None, "/", MS_REC | MS_PRIVATE)
    mount(workdir, workdir, MS_BIND | MS_REC)  # its own mount, so it stays writable below
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target, options = unescape(fields[4]), fields[5].split(",")
        if target == workdir or target.startswith(workdir + "/"):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in options:
            flags |= KEPT_FLAGS.get(opt, 0)
        mount(None, target, flags)


def refuse_new_processes():
    """A seccomp filter: fork, vfork and non-thread clones fail with EPERM, clone3 with ENOSYS (glibc
    then falls back to clone for threads). Returns False where the architecture is not known."""
    import platform

    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())
    if arch is None:
        return False
    clone, fork, vfork, clone3 = SYSCALLS[arch]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    # (code, jump-if-true label, jump-if-false label, k); labels resolve to relative offsets below.
    program = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, None, "deny", arch),
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, "deny", None, 0x40000000),  # the x32 ABI
        (jeq, "deny", None, fork),
        (jeq, "deny", None, vfork),
        (jeq, "nosys", None, clone3),
        (jeq, None, "allow", clone),
        (ld, 0, 0, 16),  # clone's flags: args[0], low word
        (jset, "allow", "deny", CLONE_THREAD),
        ("allow", ret, allow),
        ("deny", ret, eperm),
        ("nosys", ret, enosys),
    ]
    labels = {ins[0]: i for i, ins in enumerate(program) if isinstance(ins[0], str)}

    def offset(target, i):
        return 0 if target is None or isinstance(target, int) else labels[target] - i - 1

    class SockFilter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_uint16),
            ("jt", ctypes.c_uint8),
            ("jf", ctypes.c_uint8),
            ("k", ctypes.c_uint32),
        ]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]

    filters = (SockFilter * len(program))()
    for i, ins in enumerate(program):
        if isinstance(ins[0], str):
            filters[i] = SockFilter(ins[1], 0, 0, ins[2])
        else:
            code, jt, jf, k = ins
            filters[i] = SockFilter(code, offset(jt, i), offset(jf, i), k)
    prog = SockFprog(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"prctl(no_new_privs): {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        fail(f"seccomp: {os.strerror(ctypes.get_errno())}")
    return True


def guard_python(workdir):
    """The fallback: refuse, from inside the interpreter, what the namespaces would have prevented."""
    root = os.path.realpath(workdir)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    path_events = {
        "os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
        "os.link", "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod",
        "shutil.rmtree", "shutil.copyfile", "shutil.copytree", "shutil.move", "shutil.chown",
    }  # fmt: skip
    refused_prefixes = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "ctypes.", "pty.")
    refused = {"os.fork", "os.forkpty", "os.system", "os.kill", "os.killpg", "mmap.__new__"}
    refused_imports = {"ctypes", "_ctypes", "_posixsubprocess", "socket", "_socket", "mmap"}

    def inside(path):
        if isinstance(path, int):
            return True  # an already-open descriptor was checked when opened
        path = os.fsdecode(path)
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags & write_flags)
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path} is not allowed")
        elif event in path_events:
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} on {arg} is not allowed")
        elif event == "import" and args[0] in refused_imports:
            raise ImportError(f"sandbox: importing {args[0]} is not allowed")
        elif event in refused or event.startswith(refused_prefixes):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)


def set_limits(spec):
    mem, cpu = spec["memory_bytes"], spec["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["file_bytes"], spec["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (spec["processes"], spec["processes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main():
    spec = json.loads(sys.argv[1])
    workdir = os.path.realpath(os.getcwd())
    program = os.path.join(workdir, spec["program"])
    env = {
        "HOME": workdir,
        "TMPDIR": workdir,
        "PATH": "/usr/bin:/bin",
        "PYTHONHASHSEED": "0",
        "LANG": "C.UTF-8",
    }
    if spec["mode"] == "namespaces":
        confine_namespaces(workdir)
        os.chdir(workdir)
        set_limits(spec)
        refuse_new_processes()
        os.execve(sys.executable, [sys.executable, "-I", "-B", program], env)
    os.environ.clear()
    os.environ.update(env)
    set_limits(spec)
    refuse_new_processes()
    guard_python(workdir)
    sys.argv = [program]
    sys.path.insert(0, workdir)
    import runpy

    runpy.run_path(program, run_name="__main__")


if __name__ == "__main__":
    main()
