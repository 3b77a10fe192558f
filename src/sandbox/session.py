# mcp-code-executor session runner: started as `python -c <common.py + this file>` inside a
# session container; keeps one interpreter and one __main__ namespace alive across calls.
#
# stdin carries messages, each a JSON header line, read by a reader thread:
#   {"op": "run", "path": ..., "marker": ..., "length": N, "plots": bool} + N bytes of source
#   {"op": "interrupt"}   -> SIGINT to this process: KeyboardInterrupt in the running program
# The program sees stdin at EOF. After each run, "\n<marker>:<status>\n" goes to stdout and to
# stderr. Background threads keep running between calls; what they print through sys.stdout or
# sys.stderr between calls is held (up to HELD bytes a stream) and written at the start of the
# next call, after a note saying so; beyond that it is counted and the note says how much was
# dropped.
#
# argv[1]: idle timeout in seconds: with no call for that long the runner exits, and so does
# its container (the server removes it). stdin reaching EOF ends the runner too.
import sys


HELD = 65536


class _Between:
    # A text stream that passes writes through during a call and holds them between calls.
    def __init__(self, stream, name):
        self._stream = stream
        self._name = name
        self._held = []
        self._size = 0
        self._dropped = 0
        self.active = False

    def write(self, text):
        if self.active:
            return self._stream.write(text)
        if self._size + len(text) <= HELD:
            self._held.append(text)
            self._size += len(text)
        else:
            self._dropped += len(text)
        return len(text)

    def release(self):
        # Called at the start of a call: what was held goes out first, with a note.
        if self._held or self._dropped:
            note = "[mcp-code-executor: printed to %s by background code after the previous call returned" % self._name
            if self._dropped:
                note += "; %d characters beyond the first %d were dropped" % (self._dropped, HELD)
            self._stream.write(note + "]\n" + "".join(self._held))
            self._stream.flush()
        self._held, self._size, self._dropped = [], 0, 0
        self.active = True

    def flush(self):
        if self.active:
            self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _session():
    import builtins
    import importlib
    import io
    import json
    import os
    import queue
    import signal
    import threading
    import types

    idle = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0
    requests = queue.Queue()

    def reader():
        buf = bytearray()

        def fill():
            chunk = os.read(0, 65536)
            if not chunk:
                raise EOFError
            buf.extend(chunk)

        try:
            while True:
                while b"\n" not in buf:
                    fill()
                end = buf.index(b"\n")
                header = json.loads(bytes(buf[:end]))
                del buf[: end + 1]
                if header.get("op") == "interrupt":
                    os.kill(os.getpid(), signal.SIGINT)
                    continue
                length = int(header.get("length", 0))
                while len(buf) < length:
                    fill()
                header["source"] = bytes(buf[:length]).decode("utf-8", "replace")
                del buf[:length]
                requests.put(header)
        except (EOFError, OSError, ValueError):
            requests.put(None)

    threading.Thread(target=reader, name="mce-session-reader", daemon=True).start()
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""))
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    main.__loader__ = None
    main.__spec__ = None
    sys.modules["__main__"] = main
    stem = [""]
    save_figures = [None]
    _whole_writes()
    streams = [_Between(sys.stdout, "stdout"), _Between(sys.stderr, "stderr")]
    sys.stdout, sys.stderr = streams

    while True:
        try:
            request = requests.get(timeout=idle)
        except queue.Empty:
            os._exit(0)
        except KeyboardInterrupt:  # an interrupt that came after its call had ended
            continue
        if request is None:
            os._exit(0)
        path = request["path"]
        if request.get("plots") and save_figures[0] is None:
            save_figures[0] = _plot_capture(lambda: stem[0])
        stem[0] = os.path.splitext(os.path.basename(path))[0]
        for s in streams:
            s.release()
        status = _call(main, path, request["source"], save_figures[0], importlib)
        for s in streams:
            s.active = False
        tail = ("\n%s:%d\n" % (request["marker"], status)).encode()
        for fd in (1, 2):
            try:
                os.write(fd, tail)
            except OSError:
                pass


def _call(main, path, source, save_figures, importlib):
    # Runs one call's source in the session's namespace; returns its status.
    import os

    status = 0
    try:
        importlib.invalidate_caches()  # packages installed since the last call
        sys.argv[:] = [path]
        sys.path[0] = os.path.dirname(path)
        main.__file__ = path
        code = compile(source, path, "exec", dont_inherit=True)
        exec(code, main.__dict__)
    except SystemExit as e:
        status = _exit_status(e.code)
    except BaseException as exc:  # report like the interpreter, without the runner's frames
        try:
            tb = exc.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != path:
                tb = tb.tb_next
            sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        except BaseException:
            pass
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
    try:
        if save_figures is not None:
            save_figures()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    return status


_session()
