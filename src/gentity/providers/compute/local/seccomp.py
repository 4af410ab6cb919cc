"""The seccomp filter applied to every process of a sandboxed instance.

Instances run code an AI agent wrote, so treat it as hostile. Bubblewrap already gives each one
its own namespaces and no capabilities; this filter removes the kernel interfaces that a process
without capabilities has no use for but an exploit would: new user namespaces (the way back to
"root" over fresh namespaces, and so to most of the kernel's attack surface), mounts, keyrings,
eBPF, perf, io_uring, userfaultfd, kernel modules, clocks and the like.

It is a deny-list in the spirit of Docker's default profile (moby/profiles, seccomp/default.json
for a container without extra capabilities): the default is to allow, and each denied call
answers an errno (EPERM unless noted) instead of killing the process, so programs that probe
for a feature degrade gracefully. The same rules cover every ABI the CPU can enter: on x86_64
that is also the i386 ABI (reachable from any 64-bit process through ``int $0x80``) and the
x32 ABI (syscall numbers with bit 30 set). A syscall from any other architecture kills the
process.

The program is compiled by libseccomp (through ``pyseccomp``, a ctypes binding to the system's
``libseccomp.so.2``) to classic BPF, the format ``bwrap --seccomp FD`` reads: bubblewrap sets
no_new_privs and loads it right before exec'ing the sandboxed command (and in its own pid-1
reaper), so it applies with or without a user namespace and whatever the capabilities.

Deliberately allowed although Docker restricts them without extra capabilities:

- ``ptrace``, ``process_vm_readv``/``process_vm_writev``, ``kcmp``, ``pidfd_getfd``,
  ``process_madvise``: all are checked by the kernel's ptrace access rules, and the sandbox has
  its own PID namespace and no capabilities, so they only reach the instance's own processes.
  Keeping them makes gdb, strace, py-spy and CRIU-style tools work. (Docker itself allows the
  first three on kernels >= 4.8, where seccomp can no longer be bypassed by a tracer.)
- ``modify_ldt`` (Docker allows it on x86 too), ``landlock_*`` and ``seccomp`` (let a program
  sandbox itself further).

Known limits of a deny-list built with the installed libseccomp: a syscall the library does not
know by name cannot be listed (such names are skipped, see ``unknown_syscalls()``), and syscalls
added to the kernel after this list was written are allowed. On the i386 ABI, ``socketcall``
hides the socket family behind a pointer, so the AF_ALG/AF_VSOCK rule covers only ``socket``.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from dataclasses import dataclass
from typing import IO, Any

__all__ = [
    "DENIED",
    "Rule",
    "SeccompUnavailable",
    "filter_program",
    "filter_text",
    "open_filter_fd",
    "unknown_syscalls",
    "write_filter",
]


@dataclass(frozen=True)
class Rule:
    """Deny ``syscall`` with ``errno``; if ``arg`` is given, only when it matches.

    ``arg`` is ``(index, mask, value)``: the rule applies when ``args[index] & mask == value``.
    """

    syscall: str
    why: str
    errno: int = errno.EPERM
    arg: tuple[int, int, int] | None = None


def _deny(why: str, *syscalls: str, err: int = errno.EPERM) -> list[Rule]:
    return [Rule(name, why, err) for name in syscalls]


# clone(2) flags that create namespaces. Each gets its own rule: the rules of one syscall are
# OR-ed, and the denial must hold when *any* of these bits is set.
_CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}

# personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, both, and the query.
_SAFE_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


def _personality_rules() -> list[Rule]:
    """Deny personality(2) for every value but ``_SAFE_PERSONAS``.

    libseccomp allows one comparison per argument in a rule, so "not one of five values" is
    spelt as a union of masked-equality tests on the low 32 bits (the kernel's argument is an
    unsigned int). The safe values use only bits 3 and 17, except the all-ones query. A value
    with some other bit set that is not all ones has a run of ones ending in a zero: either it
    ends at an "other" bit j (rule: bit j set, bit j+1 clear), or it ends at bit 3 or 17 and
    then contains bit 2 or 16, both "other" bits (rule: bits j-1 and j set, bit j+1 clear). No
    safe value matches any rule. ``tests/providers/test_seccomp.py`` checks this exhaustively
    over many values and by running the syscall.
    """
    safe_bits = {3, 17}
    rules = []
    for j in range(32):
        nxt = 1 << ((j + 1) % 32)
        if j in safe_bits:
            run = (1 << (j - 1)) | (1 << j)
            mask, value = run | nxt, run
        else:
            mask, value = (1 << j) | nxt, 1 << j
        rules.append(
            Rule(
                "personality",
                "only PER_LINUX(32)/UNAME26 and the query: other personas (READ_IMPLIES_EXEC, "
                "ADDR_NO_RANDOMIZE, ...) weaken mitigations and reach little-tested kernel code",
                arg=(0, mask, value),
            )
        )
    return rules


AF_ALG = 38
AF_VSOCK = 40
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
_INT_ARG = 0xFFFFFFFF  # (unsigned) int arguments: the kernel ignores the register's upper half

# Every denial, with the reason. Names the installed libseccomp does not know, or that do not
# exist on an ABI (vm86 on x86_64, stime on x86_64, ...), are skipped there.
DENIED: tuple[Rule, ...] = tuple(
    [
        # Namespaces: a new user namespace gives full capabilities over fresh namespaces, the
        # entry point of most unprivileged kernel exploits (netfilter, overlayfs, ...).
        *_deny("creates or joins namespaces (user namespaces above all)", "unshare", "setns"),
        *(
            Rule("clone", f"{name}: creates a namespace", arg=(0, bit, bit))
            for name, bit in _CLONE_NAMESPACE_FLAGS.items()
        ),
        # clone3 passes its flags in memory, out of seccomp's reach. ENOSYS makes glibc, musl,
        # Go and Rust fall back to clone(2), whose flags are checked above (as Docker does).
        *_deny("flags unverifiable; callers fall back to clone", "clone3", err=errno.ENOSYS),
        # Mounts: rearranging the filesystem view (uncovering what bwrap hid, remounting rw).
        *_deny(
            "changes the mount table",
            *("mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree"),
            *("fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
        ),
        *_deny("a chroot is an ingredient of classic escapes; no agent needs it", "chroot"),
        # Kernel state shared by the whole machine.
        *_deny(
            "loads or removes kernel code",
            *("init_module", "finit_module", "delete_module", "create_module"),
            *("get_kernel_syms", "query_module", "kexec_load", "kexec_file_load"),
        ),
        *_deny("reboots or halts the machine", "reboot"),
        *_deny("swap is the host's", "swapon", "swapoff"),
        *_deny("process accounting is the host's", "acct"),
        *_deny("quotas are the host's", "quotactl", "quotactl_fd"),
        *_deny(
            "the clock is not namespaced",
            *("settimeofday", "stime", "clock_settime", "clock_settime64"),
            *("clock_adjtime", "clock_adjtime64", "adjtimex"),
        ),
        *_deny("the UTS namespace is private anyway; no agent needs it", "sethostname"),
        *_deny("the UTS namespace is private anyway", "setdomainname"),
        *_deny("kernel log: kernel addresses and other tenants' messages", "syslog"),
        *_deny("hangs up the controlling terminal of others", "vhangup"),
        *_deny("obsolete interfaces with a history of bugs", "_sysctl", "nfsservctl", "uselib"),
        *_deny("kernel profiling interface, leaks kernel pointers", "lookup_dcookie"),
        *_deny("raw I/O port access", "iopl", "ioperm"),
        *_deny("virtual 8086 mode (i386 only)", "vm86", "vm86old"),
        # Kernel attack surface an unprivileged program has no use for.
        *_deny("keyrings are not namespaced", "keyctl", "add_key", "request_key"),
        *_deny("eBPF: verifier bugs are a classic privilege escalation", "bpf"),
        *_deny("perf events: kernel attack surface and side channels", "perf_event_open"),
        *_deny("userfaultfd stalls the kernel at will, an exploit primitive", "userfaultfd"),
        *_deny(
            "io_uring: a large, bug-prone surface (Docker blocks it since 2023); libuv and "
            "others fall back to threads",
            *("io_uring_setup", "io_uring_enter", "io_uring_register"),
        ),
        *_deny("fanotify watches whole filesystems", "fanotify_init"),
        *_deny(
            "file handles bypass path permissions (the 'shocker' escape)",
            *("open_by_handle_at", "name_to_handle_at"),
        ),
        *_deny(
            "NUMA policy and page migration (Docker requires CAP_SYS_NICE); programs treat "
            "the error as 'no NUMA'",
            *("mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node"),
            *("migrate_pages", "move_pages"),
        ),
        *_personality_rules(),
        # Socket families Docker blocks. EAFNOSUPPORT is what a kernel without them answers.
        Rule(
            "socket",
            "AF_ALG: the kernel crypto API, needless attack surface",
            errno.EAFNOSUPPORT,
            arg=(0, _INT_ARG, AF_ALG),
        ),
        Rule(
            "socket",
            "AF_VSOCK: talks to the hypervisor or the VMs of this host, across namespaces",
            errno.EAFNOSUPPORT,
            arg=(0, _INT_ARG, AF_VSOCK),
        ),
        # Terminal ioctls that act on a terminal shared with whoever started the sandbox
        # (flatpak blocks the same two).
        Rule(
            "ioctl",
            "TIOCSTI: types into the terminal, i.e. runs commands in the parent's shell",
            arg=(1, _INT_ARG, TIOCSTI),
        ),
        Rule(
            "ioctl",
            "TIOCLINUX: reads and pastes the virtual console's selection",
            arg=(1, _INT_ARG, TIOCLINUX),
        ),
    ]
)


class SeccompUnavailable(RuntimeError):
    """pyseccomp or the system's libseccomp.so.2 is missing: no filter can be built."""


def _lib() -> Any:
    """The pyseccomp module, imported on first use so that importing this one never fails."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as exc:  # RuntimeError: libseccomp.so.2 not found
        raise SeccompUnavailable(f"cannot build the seccomp filter: {exc}") from exc
    return pyseccomp


def _arches() -> list[int]:
    """The ABIs a process on this host can enter: the native one plus its compat ABIs."""
    pyseccomp = _lib()
    native = int(pyseccomp.system_arch())
    if native == pyseccomp.Arch.X86_64:
        return [pyseccomp.Arch.X86, pyseccomp.Arch.X32]
    if native == pyseccomp.Arch.AARCH64:
        return [pyseccomp.Arch.ARM]
    return []


def _syscall_number(name: str) -> int | None:
    """The number libseccomp uses for ``name`` (negative for one absent on the native ABI)."""
    pyseccomp = _lib()
    number = int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))
    return None if number == -1 else number  # -1 is __NR_SCMP_ERROR: an unknown name


@functools.cache
def unknown_syscalls() -> tuple[str, ...]:
    """Names in ``DENIED`` that the installed libseccomp does not know (and so are allowed)."""
    return tuple(sorted({r.syscall for r in DENIED if _syscall_number(r.syscall) is None}))


def _build() -> Any:
    """A fresh ``pyseccomp.SyscallFilter`` holding every rule of ``DENIED``."""
    pyseccomp = _lib()
    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    # A syscall made through an ABI the filter does not list: kill the whole process.
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    for arch in _arches():
        flt.add_arch(arch)
    for rule in DENIED:
        number = _syscall_number(rule.syscall)
        if number is None:
            continue
        args = []
        if rule.arg is not None:
            index, mask, value = rule.arg
            args.append(pyseccomp.Arg(index, pyseccomp.MASKED_EQ, mask, value))
        flt.add_rule(pyseccomp.ERRNO(rule.errno), number, *args)
    return flt


@functools.cache
def filter_program() -> bytes:
    """The compiled classic-BPF program (``struct sock_filter[]``), as bwrap reads it.

    Built once per process (a few milliseconds) and cached. Raises ``SeccompUnavailable``
    when libseccomp is missing.
    """
    flt = _build()
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)  # libseccomp writes to the file descriptor directly
        out.seek(0)
        return out.read()


def filter_text() -> str:
    """libseccomp's readable pseudo-code of the filter, for debugging and tests."""
    with tempfile.TemporaryFile() as out:
        _build().export_pfc(out)
        out.seek(0)
        return out.read().decode()


def write_filter(dest: int | IO[bytes]) -> None:
    """Write the program to a file descriptor or binary file (not closed afterwards)."""
    program = filter_program()
    if isinstance(dest, int):
        view = memoryview(program)
        while view:
            view = view[os.write(dest, view) :]
    else:
        dest.write(program)
        dest.flush()


def open_filter_fd() -> int:
    """A new file descriptor holding the program, positioned at its start, for ``--seccomp``.

    Hand it to the bwrap child with ``pass_fds=(fd,)`` and ``--seccomp <fd>``, then close it in
    the parent once the child is started; bwrap reads it to the end and closes its copy. It is
    an anonymous memory file, close-on-exec except in the child that ``pass_fds`` names it for.
    """
    fd = os.memfd_create("gentity-seccomp", os.MFD_CLOEXEC)
    try:
        write_filter(fd)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
