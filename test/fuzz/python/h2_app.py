"""An app served by an independent, strict HTTP/2 server (Debian python3-h2) for
test/fuzz/h2-upstream.fuzz.test.ts: it checks everything ward's HTTP/2 client sends (frame
sizes, flow control against the windows it grants, stream states, header validity) and answers
through h2's own encoder (dynamic table, Huffman, CONTINUATION for large blocks, padding).

It prints its port, then one line per protocol error it saw ("ERROR ...").

Each request says how to answer in its fields:
  x-app-settings: window,frame,table   new SETTINGS for this connection, sent when the request
                                        arrives (INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE,
                                        HEADER_TABLE_SIZE), mid-stream for ward's upload
  x-app-resp-len: n                     a body of n octets i % 251
  x-app-chunk: n, x-app-pad: n          DATA frames of at most n octets, padded with n octets
  x-app-trailers: 1                     trailers x-done: yes
  x-app-big: n                          a response field of n octets (CONTINUATION past 16 KiB)
The answer carries x-echo-len / x-echo-sha of the request body, x-echo-fuzz-* for each
x-fuzz-* field and x-echo-trailer for a request trailer x-req-trailer.
"""
import hashlib
import selectors
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def pattern(n):
    return bytes(i % 251 for i in range(n))


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.h2 = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.streams = {}
        self.flush()

    def flush(self):
        out = self.h2.data_to_send()
        if out:
            self.sock.setblocking(True)
            self.sock.sendall(out)
            self.sock.setblocking(False)

    def receive(self, data):
        for ev in self.h2.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                fields = dict(ev.headers)
                self.streams[ev.stream_id] = {"fields": fields, "hash": hashlib.sha256(), "n": 0, "trailer": None, "out": None}
                s = fields.get("x-app-settings")
                if s:
                    window, frame, table = (int(x) for x in s.split(","))
                    self.h2.update_settings(
                        {
                            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                            h2.settings.SettingCodes.MAX_FRAME_SIZE: frame,
                            h2.settings.SettingCodes.HEADER_TABLE_SIZE: table,
                        }
                    )
            elif isinstance(ev, h2.events.DataReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st["hash"].update(ev.data)
                    st["n"] += len(ev.data)
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st["trailer"] = dict(ev.headers).get("x-req-trailer")
            elif isinstance(ev, h2.events.StreamEnded):
                self.answer(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.SettingsAcknowledged):
                # h2 decides on WINDOW_UPDATE only as data is acknowledged. Once a smaller
                # INITIAL_WINDOW_SIZE applies, a stream whose window it left at or below 0 gets
                # no more data to acknowledge: ask again, or the upload stalls (on h2's side).
                for sid in list(self.h2.streams):
                    try:
                        self.h2.acknowledge_received_data(0, sid)
                    except h2.exceptions.StreamClosedError:
                        pass
        self.send_bodies()
        self.flush()

    def answer(self, sid):
        st = self.streams[sid]
        f = st["fields"]
        headers = [(":status", "200"), ("x-echo-len", str(st["n"])), ("x-echo-sha", st["hash"].hexdigest())]
        headers += [("x-echo-" + k[2:], v) for k, v in f.items() if k.startswith("x-fuzz-")]
        if st["trailer"] is not None:
            headers.append(("x-echo-trailer", st["trailer"]))
        big = int(f.get("x-app-big", "0"))
        if big:
            headers.append(("x-big", "b" * big))
        body = pattern(int(f.get("x-app-resp-len", "0")))
        trailers = f.get("x-app-trailers") == "1"
        self.h2.send_headers(sid, headers, end_stream=not body and not trailers)
        if body or trailers:
            pad = f.get("x-app-pad")
            st["out"] = {"body": body, "sent": 0, "chunk": int(f.get("x-app-chunk", "16384")), "pad": None if pad is None else int(pad), "trailers": trailers}
        else:
            del self.streams[sid]

    def send_bodies(self):
        for sid, st in list(self.streams.items()):
            o = st["out"]
            if o is None:
                continue
            while True:
                left = len(o["body"]) - o["sent"]
                if left == 0:
                    if o["trailers"]:
                        self.h2.send_headers(sid, [("x-done", "yes")], end_stream=True)
                    del self.streams[sid]
                    break
                overhead = 0 if o["pad"] is None else o["pad"] + 1
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size) - overhead
                n = min(o["chunk"], left, room)
                if n <= 0:
                    break
                last = n == left and not o["trailers"]
                self.h2.send_data(sid, o["body"][o["sent"] : o["sent"] + n], end_stream=last, pad_length=o["pad"])
                o["sent"] += n
                if last:
                    del self.streams[sid]
                    break


def main():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, None)
    print(lsock.getsockname()[1], flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                sock, _ = lsock.accept()
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, Conn(sock))
                continue
            conn = key.data
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, ConnectionResetError):
                data = b"" if not isinstance(sys.exc_info()[1], BlockingIOError) else None
            if data is None:
                continue
            if not data:
                sel.unregister(conn.sock)
                conn.sock.close()
                continue
            try:
                conn.receive(data)
            except h2.exceptions.ProtocolError as err:
                print(f"ERROR {type(err).__name__}: {err}", flush=True)
                conn.flush()
                sel.unregister(conn.sock)
                conn.sock.close()


main()
