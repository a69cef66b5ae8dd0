"""The API's stream framing, shared by the server (agent/api.py) and the
client (agent/cli/client.py): a streaming response (Content-Type
STREAM_CONTENT_TYPE) is a sequence of frames, each FRAME_HEADER (stream id,
3 zero bytes, payload length, big-endian) then the payload.

Server to client: STDOUT and STDERR carry output bytes, EVENT one JSON
object (progress, the exit status, an in-band error). Client to server, on
a connection the server has taken over for a process's input (exec -i,
run -i): STDIN frames carry input bytes, an empty STDIN frame is end of
input; a RESIZE frame carries {"rows", "cols"} for a terminal (-t).
"""

import struct

STREAM_CONTENT_TYPE = "application/vnd.cgroup-agent.stream"
STDIN, STDOUT, STDERR, EVENT, RESIZE = 0, 1, 2, 3, 4
FRAME_HEADER = struct.Struct(">BxxxI")


def frame(stream: int, data: bytes) -> bytes:
    return FRAME_HEADER.pack(stream, len(data)) + data
