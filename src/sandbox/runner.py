# mcp-code-executor runner: started as `python -c <this file>` inside a run container; reads one
# program from stdin and runs it as __main__, the way `python <path>` would.
#
# stdin: one JSON header line {"path": "<the stored file's path>", "argv": [...]}, then the
# program's source until EOF. The program then sees stdin at EOF, sys.argv[0] == path,
# __name__ == "__main__", __file__ == path and tracebacks that name the stored file (the runner's
# own frames are left out).
import sys


def _run():
    import builtins
    import json
    import os
    import types

    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    source = stdin.read()
    path = header["path"]
    sys.argv[:] = [path] + list(header.get("argv", []))
    sys.path[0] = os.path.dirname(path)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    main.__loader__ = None
    main.__spec__ = None
    sys.modules["__main__"] = main
    try:
        code = compile(source, path, "exec", dont_inherit=True)
        del source, header
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # report like the interpreter, without the runner's frames
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        sys.exit(130 if isinstance(exc, KeyboardInterrupt) else 1)


_run()
