"""Runs model-written Python under a sandbox; started by rewards.sandbox, never imported.

Started as `python -I -S -B sandbox_harness.py` in an empty temp dir with a minimal
environment (and, where the kernel allows, in a new network namespace). It reads
its whole job from stdin, sets rlimits, installs an audit hook that cannot be removed,
and only then runs the code. The hook refuses: sockets, subprocesses, fork/exec,
signals to other processes, ctypes, files outside the temp dir (the standard library
stays readable, for imports), frame introspection (which could reveal the nonce).

Results go to the fd that was stdout, one line per test: `<nonce> <index> <1|0>`.
The nonce is never visible to the model's code, so printing fake results, exiting
early with status 0 (`os._exit(0)`), or raising SystemExit cannot fake a pass: a test
without its line did not pass.
"""

import io
import json
import os
import resource
import sys


def _limits(job):
    def cap(kind, value):
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            pass

    try:  # soft limit: SIGXCPU; hard limit one second later: SIGKILL
        resource.setrlimit(resource.RLIMIT_CPU, (int(job["cpu_s"]), int(job["cpu_s"]) + 1))
    except (ValueError, OSError):
        pass
    if job["memory_mb"]:
        cap(resource.RLIMIT_AS, int(job["memory_mb"]) * 1024 * 1024)
    cap(resource.RLIMIT_FSIZE, 16 * 1024 * 1024)
    cap(resource.RLIMIT_NOFILE, 64)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NPROC, 16)


def _install_hook(workdir, readable):
    realpath, sep = os.path.realpath, os.sep
    workdir = realpath(workdir)
    blocked_imports = {"ctypes", "_ctypes", "_posixsubprocess", "socket", "_socket", "signal", "_signal",
                       "multiprocessing", "_multiprocessing", "pty", "fcntl", "_ssl", "ssl", "_testcapi",
                       "_testinternalcapi", "_testbuffer", "_xxsubinterpreters", "_xxinterpchannels",
                       "_posixshmem", "faulthandler"}
    blocked_events = {"os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                      "subprocess.Popen", "os.kill", "os.killpg", "sys._current_frames",
                      "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
                      "gc.get_referents", "sys.addaudithook", "os.symlink", "os.link", "os.chroot",
                      "os.setxattr", "os.removexattr", "sys._getframemodulename", "code.__new__",
                      "function.__new__", "os.putenv", "os.unsetenv", "cpython.run_command", "os.startfile",
                      "sys.remote_exec", "pdb.Pdb", "webbrowser.open"}
    path_events = {"os.listdir", "os.scandir", "os.chdir", "os.mkdir", "os.remove", "os.rmdir", "os.rename",
                   "os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.copyfile"}
    frame_attrs = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals", "f_locals"}
    # Stdlib code that reads its caller's module name through sys._getframe (namedtuple,
    # typing, enum) may; anything else could walk up to the harness's frame.
    getframe_ok = {os.path.join(r, m) for r in readable
                   for m in ("collections/__init__.py", "typing.py", "enum.py", "dataclasses.py")}
    getframe, in_hook = sys._getframe, [False]

    def inside(path, allow_read):
        if isinstance(path, int):
            return True
        try:
            p = realpath(os.fsdecode(path))
        except Exception:
            return False
        if p == workdir or p.startswith(workdir + sep) or p == "/dev/null":
            return True
        return allow_read and any(p == r or p.startswith(r + sep) for r in readable)

    def hook(event, args):
        if event == "sys._getframe":
            if in_hook[0]:
                return
            in_hook[0] = True
            try:
                caller = getframe(1).f_code.co_filename
            finally:
                in_hook[0] = False
            if caller not in getframe_ok:
                raise PermissionError("sandbox: sys._getframe is not allowed")
            return
        if event in blocked_events or event.startswith(("socket.", "ctypes.", "os.exec", "os.spawn")):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].split(".")[0] in blocked_imports:
            raise PermissionError(f"sandbox: import of {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if path is not None and not inside(path, allow_read=not writing):
                raise PermissionError(f"sandbox: cannot open {path!r} outside the sandbox directory")
        elif event in path_events:
            if args and not inside(args[0], allow_read=event in ("os.listdir", "os.scandir")):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory")
            if event in ("os.rename",) and len(args) > 1 and not inside(args[1], False):
                raise PermissionError("sandbox: os.rename outside the sandbox directory")
        elif event == "object.__getattr__" and len(args) > 1 and args[1] in frame_attrs:
            raise PermissionError(f"sandbox: access to {args[1]} is not allowed")

    sys.addaudithook(hook)


def main():
    job = json.loads(sys.stdin.read())
    sys.stdin = io.StringIO("")
    nonce, code, tests = job.pop("nonce"), job.pop("code"), job.pop("tests")
    workdir = os.getcwd()
    out_fd = os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(null, 2)
    _limits(job)
    # Modules the harness itself uses are imported before the hook blocks anything.
    _write, _exec, _compile, _StringIO = os.write, exec, compile, io.StringIO
    _sys_mod = sys

    def report(i, ok):
        try:
            _write(out_fd, f"{nonce} {i} {1 if ok else 0}\n".encode())
        except OSError:
            pass

    _install_hook(workdir, tuple(job["readable"]))
    del job
    io_tests = bool(tests) and isinstance(tests[0], dict)
    if not io_tests:
        ns = {"__name__": "__main__", "__builtins__": __builtins__}
        try:
            _exec(_compile(code, "solution.py", "exec"), ns)
            loaded = True
        except BaseException:
            loaded = False
        for i, test in enumerate(tests):
            ok = False
            if loaded:
                try:
                    _exec(_compile(test, f"test_{i}.py", "exec"), ns)
                    ok = True
                except BaseException:
                    ok = False
            report(i, ok)
        return
    for i, test in enumerate(tests):
        ok = False
        out = _StringIO()
        try:
            _sys_mod.stdin, _sys_mod.stdout = _StringIO(str(test.get("input", ""))), out
            _exec(_compile(code, "solution.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
            got = [line.rstrip() for line in out.getvalue().strip().splitlines()]
            want = [line.rstrip() for line in str(test.get("output", "")).strip().splitlines()]
            ok = got == want
        except BaseException:
            ok = False
        report(i, ok)


if __name__ == "__main__":
    main()
