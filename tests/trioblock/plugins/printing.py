"""A chatty plugin: print() at load time, in callbacks and in dump_plugin()."""

print("loading printing plugin")

API_VERSION = 2


def open(readonly):
    print("open called")
    return None


def get_size(h):
    return 512


def pread(h, buf, offset, flags):
    print("pread called")
    buf[:] = b"x" * len(buf)


def dump_plugin():
    print("printing_key=1")
    print("other=2")
