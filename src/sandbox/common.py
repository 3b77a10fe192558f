# mcp-code-executor: what the runner (runner.py) and the session runner (session.py) share —
# whole writes to stdout/stderr, figure capture and exit statuses; the server prepends this file
# to either before passing it to `python -c`.
import sys


def _whole_writes():
    # With PYTHONUNBUFFERED (set for every container) the text layer of stdout and stderr writes
    # straight to the file and ignores a short write. Under gVisor a write to the output pipe
    # returns after 64 KiB, so one large print would silently lose the rest. Give both streams
    # a raw layer that writes everything (still unbuffered; nothing changes where writes are
    # whole, as under runc).
    import io
    import select

    class Whole(io.FileIO):
        def write(self, data):
            view = memoryview(data).cast("B")
            done = 0
            while done < len(view):
                n = io.FileIO.write(self, view[done:])
                if n is None:  # a non-blocking descriptor that is full: wait, then go on
                    select.select([], [self], [])
                    continue
                done += n
            return done

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(getattr(stream, "buffer", None), io.FileIO):
            continue  # buffered: BufferedWriter already writes everything
        raw = Whole(stream.fileno(), "wb", closefd=False)
        whole = io.TextIOWrapper(
            raw,
            encoding=stream.encoding,
            errors=stream.errors,
            line_buffering=stream.line_buffering,
            write_through=True,
        )
        setattr(sys, name, whole)


def _plot_capture(stem_of):
    # A matplotlib backend, made importable without importing matplotlib (an import hook that
    # builds it when matplotlib asks for it): figures the program shows (plt.show()) or leaves
    # open at exit are saved as <stem>_figure<N>.png next to it where the server finds them and
    # returns them as images (stem_of() gives the stem). Rendering is Agg: no display needed.
    import importlib.abc
    import importlib.util
    import os

    name = "mcp_code_executor_backend"
    count = [0]

    def save_open_figures():
        helpers = sys.modules.get("matplotlib._pylab_helpers")
        if helpers is None:
            return
        for manager in list(helpers.Gcf.get_all_fig_managers()):
            count[0] += 1
            try:
                manager.canvas.figure.savefig("%s_figure%d.png" % (stem_of(), count[0]), format="png")
            except Exception as e:
                print("could not save figure %d: %s" % (count[0], e), file=sys.stderr)
            helpers.Gcf.destroy(manager)

    def show(*args, **kwargs):
        save_open_figures()

    class Backend(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path=None, target=None):
            if fullname == name:
                return importlib.util.spec_from_loader(fullname, self)
            return None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            module.FigureCanvas = FigureCanvasAgg
            module.show = show

    sys.meta_path.insert(0, Backend())
    backend = "module://" + name
    os.environ["MPLBACKEND"] = backend
    if "matplotlib" in sys.modules:  # pre-imported: its backend setting was already read
        try:
            sys.modules["matplotlib"].rcParams["backend"] = backend
        except Exception:
            pass
    return save_open_figures


def _exit_status(code):
    # As the interpreter maps SystemExit codes.
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1
