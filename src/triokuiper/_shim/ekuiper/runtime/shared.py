"""``ekuiper.runtime.shared``: the SDK's protocol constants."""

CMD_START = "start"
CMD_STOP = "stop"

TYPE_SOURCE = "source"
TYPE_SINK = "sink"
TYPE_FUNC = "func"

REPLY_OK = "ok"
