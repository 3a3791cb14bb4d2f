"""An independent, strict HTTP/2 client (Debian python3-h2, the one httpx and hyper use) for
test/fuzz/h2.fuzz.test.ts. One JSON connection spec per line on stdin, one JSON result per line
on stdout.

A spec: {"port": n, "settings": {"initialWindowSize": n, "maxFrameSize": n, "headerTableSize": n},
"settingsLater": {...} | null, "streams": [{"headers": [[name, value], ...], "body": n, "chunk": n,
"pad": n | null, "trailers": [[name, value], ...] | null, "cancelAt": n | null}, ...]}.
`settingsLater` is a second SETTINGS frame, sent once every stream is open (the sidecar must
apply a new window to streams it is already answering); `cancelAt` resets the stream
(RST_STREAM CANCEL) once that many octets of its response arrived. The request bodies are octets i % 251 (i from
0); the client interleaves its streams frame by frame, pads DATA frames when asked, and stays
within the flow-control windows the sidecar grants. Everything the sidecar sends is checked by
h2 itself (frame sizes, flow control, stream states, header validity): a violation is reported
as "protocolError" rather than answered.

A result: {"streams": [{"status", "headers": {...}, "bodyLength", "bodySha256", "trailers":
{...} | null, "reset": code | null, "cancelled": bool}, ...], "protocolError": text | null,
"goaway": code | null}
"""
import hashlib
import json
import socket
import sys
import time
import traceback

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def pattern(n):
    return bytes(i % 251 for i in range(n))


def run(spec):
    sock = socket.create_connection(("127.0.0.1", spec["port"]), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    def settings(s):
        conn.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: s["initialWindowSize"],
                h2.settings.SettingCodes.MAX_FRAME_SIZE: s["maxFrameSize"],
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: s["headerTableSize"],
            }
        )

    settings(spec["settings"])
    sock.sendall(conn.data_to_send())
    results = {}
    state = {"protocolError": None, "goaway": None, "acked": False}
    deadline = time.monotonic() + 15

    def pump(block):
        """Reads what the sidecar sent (waiting for it when `block`) and handles its events."""
        sock.settimeout(max(0.05, deadline - time.monotonic()) if block else 0.0)
        try:
            data = sock.recv(65536)
        except (BlockingIOError, TimeoutError):
            return
        finally:
            sock.settimeout(10)
        if not data:
            raise ConnectionError("the sidecar closed the connection")
        for ev in conn.receive_data(data):
            sid = getattr(ev, "stream_id", None)
            r = results.get(sid)
            if isinstance(ev, h2.events.SettingsAcknowledged):
                state["acked"] = True
                # h2 decides on WINDOW_UPDATE only as data is acknowledged; after a smaller
                # INITIAL_WINDOW_SIZE applies, a stream it left at or below 0 would get no more
                # data to acknowledge. Ask again (a stall on h2's side, not the sidecar's).
                for sid_ in list(results):
                    if not results[sid_]["ended"]:
                        conn.acknowledge_received_data(0, sid_)
            elif isinstance(ev, h2.events.ResponseReceived):
                r["status"] = dict(ev.headers).get(":status")
                r["headers"] = {k: v for k, v in ev.headers if not k.startswith(":")}
            elif isinstance(ev, h2.events.DataReceived):
                if r["ended"]:
                    continue  # in flight when we cancelled it
                r["body"].update(ev.data)
                r["bodyLength"] += len(ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if r["cancelAt"] is not None and r["bodyLength"] >= r["cancelAt"]:
                    try:
                        conn.reset_stream(ev.stream_id, error_code=8)
                        r["cancelled"] = True
                        r["ended"] = True
                    except h2.exceptions.StreamClosedError:
                        pass  # its end is in this same read: nothing left to cancel
            elif isinstance(ev, h2.events.TrailersReceived):
                if not r["cancelled"]:
                    r["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                r["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                if r is not None and not r["cancelled"]:
                    r["reset"] = int(ev.error_code)
                    r["ended"] = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                state["goaway"] = int(ev.error_code)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)

    try:
        while not state["acked"]:
            if time.monotonic() > deadline:
                raise TimeoutError("no SETTINGS acknowledgement")
            pump(True)
        sending = []
        for st in spec["streams"]:
            sid = conn.get_next_available_stream_id()
            results[sid] = {"status": None, "headers": {}, "body": hashlib.sha256(), "bodyLength": 0, "trailers": None, "reset": None, "ended": False, "cancelAt": st["cancelAt"], "cancelled": False}
            conn.send_headers(sid, st["headers"], end_stream=st["body"] == 0 and st["trailers"] is None)
            sending.append({"id": sid, "data": pattern(st["body"]), "sent": 0, "chunk": st["chunk"], "pad": st["pad"], "trailers": st["trailers"]})
        if spec.get("settingsLater") is not None:
            settings(spec["settingsLater"])
        sock.sendall(conn.data_to_send())
        # Round robin, one DATA frame per stream per turn, within the windows.
        while sending:
            if time.monotonic() > deadline:
                raise TimeoutError("the sidecar's windows never let the request bodies through")
            progressed = False
            for w in list(sending):
                if results[w["id"]]["ended"]:
                    sending.remove(w)  # reset or answered early: nothing more to send
                    continue
                left = len(w["data"]) - w["sent"]
                if left == 0:
                    if w["trailers"] is not None:
                        conn.send_headers(w["id"], w["trailers"], end_stream=True)
                    sending.remove(w)
                    progressed = True
                    continue
                pad = w["pad"]
                overhead = 0 if pad is None else pad + 1
                room = min(conn.local_flow_control_window(w["id"]), conn.max_outbound_frame_size) - overhead
                n = min(w["chunk"], left, room)
                if n <= 0:
                    continue
                last = n == left and w["trailers"] is None
                conn.send_data(w["id"], w["data"][w["sent"] : w["sent"] + n], end_stream=last, pad_length=pad)
                w["sent"] += n
                if last:
                    sending.remove(w)
                progressed = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            pump(not progressed)
        while not all(r["ended"] for r in results.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("not every response ended")
            if state["goaway"] is not None:
                break
            pump(True)
    except h2.exceptions.ProtocolError as err:
        frames = traceback.extract_tb(err.__traceback__)[-6:]
        where = " < ".join(f"{f.name}:{f.lineno}" for f in reversed(frames))
        state["protocolError"] = f"{type(err).__name__}: {err} (at {where})"
    except (ConnectionError, TimeoutError, OSError) as err:
        state["protocolError"] = f"{type(err).__name__}: {err}"
    finally:
        sock.close()
    streams = []
    for r in results.values():
        streams.append(
            {
                "status": r["status"],
                "headers": r["headers"],
                "bodyLength": r["bodyLength"],
                "bodySha256": r["body"].hexdigest(),
                "trailers": r["trailers"],
                "reset": r["reset"],
                "cancelled": r["cancelled"],
            }
        )
    return {"streams": streams, "protocolError": state["protocolError"], "goaway": state["goaway"]}


for line in sys.stdin:
    sys.stdout.write(json.dumps(run(json.loads(line))) + "\n")
    sys.stdout.flush()
