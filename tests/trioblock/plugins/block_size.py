"""block_size() returns what ``block_size=MIN,PREF,MAX`` says; ``as_list=1`` returns a list."""

API_VERSION = 2
BLOCK_SIZE = (0, 0, 0)
AS_LIST = False


def config(key, value):
    global BLOCK_SIZE, AS_LIST
    if key == "block_size":
        BLOCK_SIZE = tuple(int(v) for v in value.split(","))
    elif key == "as_list":
        AS_LIST = value == "1"
    else:
        raise RuntimeError("unknown parameter " + key)


def open(readonly):
    return None


def get_size(h):
    return 1 << 20


def pread(h, buf, offset, flags):
    buf[:] = bytes(len(buf))


def block_size(h):
    return list(BLOCK_SIZE) if AS_LIST else BLOCK_SIZE
