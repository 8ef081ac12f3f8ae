"""Privilege separation between the trusted runner and the payload (both backends).

The runner starts with the privileges it needs (root on the process backend; root with only
CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_KILL in a Docker container) and, in the forked child just before
exec, turns it into the payload:

- an unprivileged uid and gid of its own, with no supplementary groups: ``PAYLOAD_UID_BASE`` plus
  the runner's host pid on the process backend (unique among live runs, in a range no distribution
  assigns), the image's ``sandbox`` user (``PAYLOAD_UID_BASE``) in Docker, where each run has its
  own PID namespace;
- no capabilities: the bounding set emptied (CAP_SETPCAP), then setresuid clears the permitted and
  effective sets, and the ambient and inheritable sets are cleared explicitly;
- no_new_privs, so no setuid binary or file capability gives anything back;
- a seccomp filter (``seccomp_program``) denying the kernel interfaces that an unprivileged process
  has no business with, and every ``socket(AF_UNIX, ...)``: no payload reaches a host Unix socket,
  pathname or abstract, whatever the file modes (``socketpair`` and pipes still work).

With a uid different from the runner's, the payload cannot signal or ptrace it nor open its
``/proc/<pid>/fd``; the runner also makes itself non-dumpable, which closes the same doors where
the uids are equal (an unprivileged host, see below). The runner then reads the payload's
credentials from ``/proc/<pid>/status`` (``payload_status``) and reports them.

Why root plus four capabilities in Docker rather than ``docker --user`` for the runner and a
second uid for the payload: an unprivileged runner can change to another uid only through a setuid
helper or file capabilities, both of which no-new-privileges (rightly set on the container)
disables. The four are all the runner keeps (CAP_KILL lets it kill every other process in the
container with one kill(-1), which no payload process can dodge by forking), and the payload has
none of them before it runs a line of its own.

Where the host runs selfloop unprivileged, the process backend cannot give the payload a uid of
its own (an unprivileged user namespace maps one uid only); it runs under the host user's uid,
never root, and ``protections`` says so.

Standard library and ctypes only: this runs inside the sandbox runner.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

PAYLOAD_UID_BASE = 0x70000000  # 1879048192: systemd's unassigned range (above the container ranges)
DOCKER_PAYLOAD_UID = PAYLOAD_UID_BASE  # the image's `sandbox` user (sandbox/Dockerfile)
NEEDED_CAPS = {6: "CAP_SETGID", 7: "CAP_SETUID", 8: "CAP_SETPCAP"}

PR_CAPBSET_DROP, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 24, 4, 38, 22
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


# --- the runner's side --------------------------------------------------------------------------

def status_fields(pid: int | str = "self") -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict (empty if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def missing_capabilities(status: dict[str, str], kill: bool = False) -> list[str]:
    """The capabilities the drop needs that this process lacks (empty: it can drop); ``kill``: also
    CAP_KILL, with which a container's runner kills every other process in it at once."""
    effective = int(status.get("CapEff", "0"), 16)
    needed = {**NEEDED_CAPS, **({5: "CAP_KILL"} if kill else {})}
    return [name for bit, name in sorted(needed.items()) if not effective >> bit & 1]


def make_undumpable() -> None:
    """No same-uid process may ptrace this one, read its memory or open /proc/<pid>/fd."""
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 63  # dropping a capability the kernel does not know fails harmlessly (EINVAL)


def payload_status(pid: int) -> dict[str, str]:
    """The payload's identity as the kernel holds it: uid, gid, groups, capability sets, nnp, seccomp."""
    fields = status_fields(pid)
    keep = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
            "Seccomp", "Seccomp_filters")
    return {key: fields[key].strip() for key in keep if key in fields}


# --- the payload's side (the forked child, before exec: no threads, no imports) ------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def become_payload(uid: int, gid: int, last_cap: int) -> None:
    """Drop to ``uid``/``gid`` with no groups and no capability in any set."""
    for cap in range(last_cap + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() != errno.EINVAL:
            _check(-1, f"prctl(PR_CAPBSET_DROP, {cap})")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # from uid 0 to none: the kernel clears permitted and effective
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    header, data = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")  # inheritable too


def no_new_privs() -> None:
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompFilter:
    """A BPF program built before the fork; ``install`` in the child only hands it to the kernel."""

    def __init__(self, program: bytes):
        self.buffer = ctypes.create_string_buffer(program, len(program))
        self.fprog = _SockFprog(len(program) // 8, ctypes.cast(self.buffer, ctypes.c_void_p))

    def install(self) -> bool:
        """True once installed; False where the kernel has no seccomp filters (needs no_new_privs)."""
        if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self.fprog), 0, 0) == 0:
            return True
        if ctypes.get_errno() == errno.EINVAL:
            return False
        _check(-1, "seccomp filter")
        return False


# --- the seccomp program -----------------------------------------------------------------------

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
# name: (x86_64, aarch64); None where the architecture has no such call.
DENIED_SYSCALLS = {
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431),
    "fsmount": (432, 432), "fspick": (433, 433), "mount_setattr": (442, 442),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438), "kcmp": (312, 272),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "reboot": (169, 142),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "unshare": (272, 97), "setns": (308, 268),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "swapon": (167, 224), "swapoff": (168, 225), "acct": (163, 89), "quotactl": (179, 60),
    "syslog": (103, 116), "lookup_dcookie": (212, 18), "fanotify_init": (300, 262),
    "iopl": (172, None), "ioperm": (173, None),
}
SOCKET, CLONE, CLONE3 = {"x86_64": 41, "aarch64": 198}, {"x86_64": 56, "aarch64": 220}, 435
AF_UNIX = 1
CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
NR_AT, ARCH_AT, ARG0_AT = 0, 4, 16  # offsets in struct seccomp_data (arg0's low word, little-endian)


def seccomp_program(machine: str) -> bytes | None:
    """The filter for this architecture, or None where there is none (another architecture).

    A foreign architecture's calls (i386 on x86_64) kill the process; denied calls fail with EPERM;
    ``clone3`` fails with ENOSYS (its flags are out of a filter's reach, and the C library then
    falls back to ``clone``, whose namespace flags are checked).
    """
    if machine not in AUDIT_ARCH:
        return None
    which = 0 if machine == "x86_64" else 1
    denied = sorted({numbers[which] for numbers in DENIED_SYSCALLS.values() if numbers[which] is not None})
    # (code, jump-if-true label, jump-if-false label, k); a label is where to go, None the next one
    code: list[tuple[int, str | None, str | None, int]] = [
        (_LD_ABS, None, None, ARCH_AT), (_JEQ, None, "kill", AUDIT_ARCH[machine]), (_LD_ABS, None, None, NR_AT)]
    if machine == "x86_64":
        code.append((_JGE, "eperm", None, X32_SYSCALL_BIT))
    code += [(_JEQ, "eperm", None, nr) for nr in denied]
    code += [(_JEQ, "socket", None, SOCKET[machine]), (_JEQ, "clone", None, CLONE[machine]),
             (_JEQ, "enosys", None, CLONE3), (_RET, None, None, RET_ALLOW)]
    labels = {"socket": len(code)}
    code += [(_LD_ABS, None, None, ARG0_AT), (_JEQ, "eperm", None, AF_UNIX), (_RET, None, None, RET_ALLOW)]
    labels["clone"] = len(code)
    code += [(_LD_ABS, None, None, ARG0_AT), (_JSET, "eperm", None, CLONE_NAMESPACES), (_RET, None, None, RET_ALLOW)]
    for label, value in (("enosys", RET_ERRNO | errno.ENOSYS), ("eperm", RET_ERRNO | errno.EPERM),
                         ("kill", RET_KILL_PROCESS)):
        labels[label] = len(code)
        code.append((_RET, None, None, value))
    out = bytearray()
    for at, (op, true, false, k) in enumerate(code):
        jt = 0 if true is None else labels[true] - at - 1
        jf = 0 if false is None else labels[false] - at - 1
        out += struct.pack("=HBBI", op, jt, jf, k)
    return bytes(out)
