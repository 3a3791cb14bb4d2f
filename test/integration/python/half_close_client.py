"""An HTTP/2 client (Python's h2, a strict, independent implementation) that sends one request,
then half-closes its TCP connection (shutdown SHUT_WR) and reads the answer.

Usage: half_close_client.py PORT PATH TOKEN. Prints one JSON line: the status, the body, the
frames of unknown type it received (and ignored, as RFC 9113 §4.1 requires), and whether the
stream ended. h2 raises on anything RFC 9113 forbids; that exits non-zero."""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events

port, path, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sock = socket.create_connection(("127.0.0.1", port))
sock.settimeout(10)
conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()
conn.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "orders.test"), (":path", path), ("authorization", f"Bearer {token}")], end_stream=True)
sock.sendall(conn.data_to_send())
sock.shutdown(socket.SHUT_WR)

status, body, unknown, ended = None, b"", [], False
while not ended:
    data = sock.recv(65536)
    if not data:
        break
    for ev in conn.receive_data(data):
        if isinstance(ev, h2.events.ResponseReceived):
            status = dict(ev.headers).get(":status")
        elif isinstance(ev, h2.events.DataReceived):
            body += ev.data
        elif isinstance(ev, h2.events.UnknownFrameReceived):
            unknown.append(ev.frame.type)
        elif isinstance(ev, h2.events.StreamEnded):
            ended = True
        elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
            raise SystemExit(f"unexpected {ev!r}")
print(json.dumps({"status": status, "body": body.decode(), "unknown": unknown, "ended": ended}))
