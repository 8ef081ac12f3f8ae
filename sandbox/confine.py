"""Kernel confinement: cgroups, namespaces, private tmpfs mounts, read-only binds and Landlock.

Each function either applies its layer or raises OSError; the runner records which layers held.
Standard library and ctypes only (this runs inside the sandbox runner).
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

CGROUP_V1 = Path("/sys/fs/cgroup")
CGROUP_PARENT = "selfloop-sandbox"

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = \
    0x1, 0x2, 0x4, 0x8, 0x20, 0x1000, 0x4000, 0x40000
# statvfs flags a read-only remount must repeat (a user namespace may not clear them): the MS_ value
ST_LOCKED = {0x2: MS_NOSUID, 0x4: MS_NODEV, 0x8: MS_NOEXEC, 0x400: 0x400, 0x800: 0x800, 0x1000: 0x200000}
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


# --- cgroups (v1 hierarchies, as root) ---------------------------------------------------------

# No cpu controller: a cgroup of its own makes the sandbox one scheduling entity, which on a busy
# machine cost ~0.1 s per run (measured); CPU is bounded by RLIMIT_CPU instead.
CGROUP_CONTROLLERS = ("memory", "pids")


def run_cgroups(runner_pid: int) -> list[Path]:
    """The memory and pids cgroups of the runner with this pid."""
    return [CGROUP_V1 / controller / CGROUP_PARENT / f"run-{runner_pid}" for controller in CGROUP_CONTROLLERS]


def join_cgroups(limits: dict) -> tuple[list[Path], Path | None]:
    """Create this run's memory (without swap) and pids cgroups, move this process in (the payload
    inherits them), and return the groups and the file that counts out-of-memory kills."""
    if not (CGROUP_V1 / "memory" / "memory.limit_in_bytes").exists():
        raise OSError(0, "no cgroup v1 memory hierarchy")
    values = {
        "memory": {"memory.limit_in_bytes": limits["memory_bytes"],
                   "memory.memsw.limit_in_bytes": limits["memory_bytes"]},
        "pids": {"pids.max": limits["pids"]},
    }
    groups = []
    for controller, group in zip(CGROUP_CONTROLLERS, run_cgroups(os.getpid())):
        if not (group.parent.parent / "cgroup.procs").exists():
            continue  # this controller is not mounted here
        group.mkdir(parents=True, exist_ok=True)
        groups.append(group)
        for name, value in values[controller].items():
            if (group / name).exists():
                (group / name).write_text(str(value))
    for group in groups:
        (group / "cgroup.procs").write_text(str(os.getpid()))
    return groups, run_cgroups(os.getpid())[0] / "memory.oom_control"


def leave_cgroups(groups: list[Path]) -> None:
    """Move back to the parent groups. Removing ours is left to the host (``remove_run_cgroups``),
    off the critical path: the kernel frees an exited task's charge a moment later."""
    for group in groups:
        try:
            (group.parent.parent / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            pass


def remove_run_cgroups(runner_pid: int) -> None:
    """After a runner has exited (or was killed): remove its groups once their processes are gone."""
    for group in run_cgroups(runner_pid):
        for _ in range(100):
            if not group.exists():
                break
            try:
                group.rmdir()
            except OSError:
                time.sleep(0.02)


def sweep_cgroups() -> int:
    """Remove run cgroups whose runner is gone and that no process is in; return how many went."""
    removed = 0
    for hierarchy in CGROUP_CONTROLLERS:
        parent = CGROUP_V1 / hierarchy / CGROUP_PARENT
        if not parent.is_dir():
            continue
        for group in parent.iterdir():
            runner = group.name.removeprefix("run-")
            if not group.is_dir() or (runner.isdigit() and os.path.exists(f"/proc/{runner}")):
                continue  # a live runner may not have moved in yet
            if not (group / "cgroup.procs").read_text().strip():
                try:
                    group.rmdir()
                    removed += 1
                except OSError:
                    pass
    return removed


# --- namespaces ---------------------------------------------------------------------------------

def unshare_namespaces() -> None:
    """New mount, PID and network namespaces for this process's children (and a user namespace
    first when not root). The next child becomes PID 1 of the new PID namespace: when it dies the
    kernel kills every process left in it."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= CLONE_NEWUSER
    _check(_libc.unshare(flags), "unshare")
    if uid != 0:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")


def mount_private_proc() -> None:
    """In the payload (PID 1 of its namespace): a mount namespace of its own with a fresh /proc, so
    the host's processes and their command lines are not even listed."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare mount namespace")
    _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")


def mount_private_tmpfs(directory: str, size_mb: int, uid: int, gid: int) -> None:
    """A size-limited tmpfs over ``directory``, owned by the payload's uid (and one over /dev/shm),
    seen by this mount namespace only."""
    _mount_tmpfs(directory, f"size={size_mb}m,mode=0700,uid={uid},gid={gid}")
    if os.path.isdir("/dev/shm"):
        _mount_tmpfs("/dev/shm", "size=64m,mode=1777")


def mount_private_run() -> None:
    """Empty /run (and /var/run where it is a directory of its own): the host's service sockets
    (Docker, containerd, systemd, D-Bus) are not even there to find."""
    for directory in ("/run", "/var/run"):
        if os.path.isdir(directory) and not os.path.islink(directory):
            _mount_tmpfs(directory, "size=1m,mode=0755", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def bind_read_only(source: str, target: str) -> None:
    """Mount ``source`` read-only at ``target`` (an existing directory or file): the payload reaches
    it without traversing the host directories above it, which may be closed to its uid."""
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind {source}")
    locked = os.statvfs(source).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    for st_flag, ms_flag in ST_LOCKED.items():
        if locked & st_flag:
            flags |= ms_flag
    _check(_libc.mount(None, target.encode(), None, flags, None), f"make {target} read-only")


# the new mount API: the same numbers on x86_64 and aarch64
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, AT_EMPTY_PATH, AT_RECURSIVE, MOVE_MOUNT_F_EMPTY_PATH = 0x1, 0x1000, 0x8000, 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_IDMAP = 0x1, 0x2, 0x4, 0x100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def idmapped_bind(source: str, target: str, userns: int) -> None:
    """Mount ``source`` read-only at ``target``, its owners' ids shown through the user namespace
    ``userns`` (``user_namespace``): the payload's uid reads what the host's owner owns whatever the
    modes (a 0700 temporary directory included). OSError where the kernel or the filesystem has no
    idmapped mounts."""
    tree = _check(_libc.syscall(SYS_OPEN_TREE, -100, source.encode(),
                                OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE), f"open_tree {source}")
    try:
        attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                          userns_fd=userns)
        _check(_libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH | AT_RECURSIVE, ctypes.byref(attr),
                             ctypes.c_size_t(ctypes.sizeof(attr))), f"idmap {source}")
        _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", -100, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
               f"mount {source} at {target}")
    finally:
        os.close(tree)


def user_namespace(owner: tuple[int, int], shown_as: tuple[int, int]) -> int:
    """A file descriptor of a new user namespace mapping ``owner`` (uid, gid) to ``shown_as``, for
    ``idmapped_bind``. A child holds it while the mappings are written, then exits: call this
    before unsharing a PID namespace (the child would become its init)."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        try:
            os.close(done_w)  # else its read below never sees the end
            os.write(ready_w, b"1" if _libc.unshare(CLONE_NEWUSER) == 0 else b"0")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(0, "unshare(CLONE_NEWUSER) failed")
        Path(f"/proc/{child}/uid_map").write_text(f"{owner[0]} {shown_as[0]} 1")
        Path(f"/proc/{child}/gid_map").write_text(f"{owner[1]} {shown_as[1]} 1")
        return os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(child, 0)


def expose(paths: list[str]) -> None:
    """Make each directory of ``paths`` reachable by any uid, in this mount namespace only: the
    topmost directory above it that others may not search (``/root`` for a Python installed under
    it) is covered by a tmpfs holding just the way down to each such path, bound there read-only.
    Whatever else that directory held is hidden."""
    covered: dict[str, list[str]] = {}
    for path in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}):
        closed = closed_ancestor(path)
        if closed and not any(path.startswith(f"{kept}/") for kept in covered.get(closed, [])):
            covered.setdefault(closed, []).append(path)
    old_umask = os.umask(0o022)
    try:
        for closed, kept in covered.items():
            handles = [os.open(path, os.O_PATH | os.O_CLOEXEC) for path in kept]  # before covering
            try:
                _mount_tmpfs(closed, "size=1m,mode=0755", MS_NOSUID | MS_NODEV)
                for path, handle in zip(kept, handles):
                    os.makedirs(path, exist_ok=True)
                    bind_read_only(f"/proc/self/fd/{handle}", path)
            finally:
                for handle in handles:
                    os.close(handle)
    finally:
        os.umask(old_umask)


def closed_ancestor(path: str) -> str | None:
    """The topmost directory strictly above ``path`` that others may not search, or None."""
    parts = path.split("/")[1:-1]
    for depth in range(1, len(parts) + 1):
        ancestor = "/" + "/".join(parts[:depth])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def _mount_tmpfs(target: str, options: str, flags: int = 0) -> None:
    _check(_libc.mount(b"tmpfs", target.encode(), b"tmpfs", flags, options.encode()), f"mount tmpfs on {target}")


# --- Landlock -----------------------------------------------------------------------------------

SYS_LANDLOCK = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_ALL_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1,
                 5: (1 << 16) - 1}
FS_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (1 << 14) | (1 << 15)
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where there is none."""
    numbers = SYS_LANDLOCK.get(os.uname().machine)
    if numbers is None:
        return 0
    version = _libc.syscall(numbers[0], None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(version, 0)


def landlock_restrict(read: list[str], write: list[str]) -> None:
    """From now on this process and its children may read (and execute) only beneath ``read``,
    write only beneath ``write``, make no TCP connection or bind (ABI 4+), and signal nothing
    outside their own domain (ABI 6+). Landlock also denies ptrace and /proc/PID access to
    processes outside the domain, which hides the host's environment variables."""
    abi = landlock_abi()
    create, add_rule, restrict_self = SYS_LANDLOCK[os.uname().machine]
    fs_all = FS_ALL_BY_ABI.get(abi, FS_ALL_BY_ABI[5])
    attr = _RulesetAttr(handled_access_fs=fs_all,
                        handled_access_net=(NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
                        scoped=(SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _check(_libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), 0), "landlock ruleset")
    try:
        read_access = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
        for paths, access in ((read, read_access), (write, fs_all)):
            for path in paths:
                _allow(add_rule, ruleset, path, access)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc.syscall(restrict_self, ruleset, 0), "landlock restrict")
    finally:
        os.close(ruleset)


def landlock_scope() -> None:
    """Only Landlock's scoping (ABI 6+): no connection to an abstract Unix socket and no signal
    outside this process's own domain; the file system is left to the container."""
    create, _, restrict_self = SYS_LANDLOCK[os.uname().machine]
    attr = _RulesetAttr(scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset = _check(_libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(24), 0), "landlock ruleset")
    try:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc.syscall(restrict_self, ruleset, 0), "landlock restrict")
    finally:
        os.close(ruleset)


def _allow(add_rule: int, ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path this machine lacks needs no rule
    try:
        if not os.path.isdir(path):
            access &= FS_FILE_ONLY
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        _check(_libc.syscall(add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
               f"landlock rule for {path}")
    finally:
        os.close(fd)
