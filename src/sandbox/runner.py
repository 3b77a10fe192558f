# mcp-code-executor runner: started as `python -c <common.py + this file>` inside a run
# container; reads one program from stdin and runs it as __main__, the way `python <path>` would.
#
# stdin: one JSON header line {"path": ..., "argv": [...], "marker": ...}, then the program's
# source until EOF. The program then sees stdin at EOF, sys.argv[0] == path, __name__ ==
# "__main__", __file__ == path and tracebacks that name the stored file (the runner's own frames
# are left out).
#
# When the program has ended as the interpreter would end it (non-daemon threads joined, atexit
# handlers run, streams flushed), the runner writes "\n<marker>:<exit status>\n" to stdout and
# to stderr, so the server knows the result without waiting for the container to stop. A
# program killed or leaving through os._exit writes no marker; the server then asks Docker.
#
# argv[1] (optional): modules to import while waiting, comma-separated (a pre-started container
# of the pool: the program then starts with them loaded). Their output and failures are
# discarded.
import sys


def _preimport():
    names = sys.argv[1] if len(sys.argv) > 1 else ""
    if not names:
        return
    import os

    saved = os.dup(1), os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        for name in filter(None, names.split(",")):
            try:
                __import__(name)
            except Exception:
                pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null,) + saved:
            os.close(fd)


def _run():
    import atexit
    import builtins
    import json
    import os
    import threading
    import types

    stdin = sys.stdin.buffer
    line = stdin.readline()
    if not line:  # the server went away before sending a program
        os._exit(0)
    header = json.loads(line)
    source = stdin.read()
    path = header["path"]
    marker = header.get("marker")
    sys.argv[:] = [path] + list(header.get("argv", []))
    sys.path[0] = os.path.dirname(path)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    main.__loader__ = None
    main.__spec__ = None
    sys.modules["__main__"] = main
    stem = os.path.splitext(os.path.basename(path))[0]
    save_figures = _plot_capture(lambda: stem) if header.get("plots") else None
    del header
    status = 0
    try:
        code = compile(source, path, "exec", dont_inherit=True)
        del source
        exec(code, main.__dict__)
    except SystemExit as e:
        status = _exit_status(e.code)
    except BaseException as exc:  # report like the interpreter, without the runner's frames
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
    if save_figures is not None:
        try:
            save_figures()
        except Exception:
            pass
    if not marker:
        sys.exit(status)
    # End like the interpreter: wait for non-daemon threads, run atexit handlers, flush.
    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    tail = ("\n%s:%d\n" % (marker, status)).encode()
    for fd in (1, 2):
        try:
            os.write(fd, tail)
        except OSError:
            pass
    os._exit(status)


_whole_writes()
_preimport()
_run()
