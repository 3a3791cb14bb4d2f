"""A Python grpcio client for ward's interop tests (a non-Node gRPC stack through the sidecar).

Python grpcio from Debian has no protoc, so messages of ward.demo.v1 are encoded by hand
(they are tiny). Prints one JSON object: the status code name, details, the decoded replies
and the trailing metadata.

usage: orders_client.py TARGET CALL [--token T] [--id ID] [--count N] [--timeout S]
CALL: get | create | delete | list | upload | chat | sleep
"""
import argparse
import json
import sys

import grpc

SVC = "/ward.demo.v1.Orders/"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data


def field_int(num, value):
    return varint(num << 3) + varint(value)


def order(id_, item="widget", qty=1, payload=b""):
    return field_bytes(1, id_.encode()) + field_bytes(2, item.encode()) + field_int(3, qty) + field_bytes(4, payload)


def decode(buf):
    """Minimal protobuf decoder: {field number: value} (strings decoded when UTF-8)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = read_varint(buf, i)
        elif wt == 2:
            ln, i = read_varint(buf, i)
            raw = buf[i:i + ln]
            i += ln
            try:
                val = raw.decode()
            except UnicodeDecodeError:
                val = raw.hex()
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out[str(num)] = val
    return out


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("call")
    ap.add_argument("--token")
    ap.add_argument("--id", default="1")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()

    md = [("authorization", "Bearer " + a.token)] if a.token else []
    ident = lambda b: b  # noqa: E731 (raw bytes in and out)
    replies, trailers = [], []
    with grpc.insecure_channel(a.target) as ch:
        try:
            if a.call in ("get", "delete"):
                method = "GetOrder" if a.call == "get" else "DeleteOrder"
                rpc = ch.unary_unary(SVC + method, request_serializer=ident, response_deserializer=ident)
                resp, call = rpc.with_call(field_bytes(1, a.id.encode()), metadata=md, timeout=a.timeout)
                replies.append(decode(resp))
                trailers = list(call.trailing_metadata() or [])
            elif a.call == "create":
                rpc = ch.unary_unary(SVC + "CreateOrder", request_serializer=ident, response_deserializer=ident)
                resp, call = rpc.with_call(order(a.id), metadata=md, timeout=a.timeout)
                replies.append(decode(resp))
                trailers = list(call.trailing_metadata() or [])
            elif a.call == "list":
                rpc = ch.unary_stream(SVC + "ListOrders", request_serializer=ident, response_deserializer=ident)
                it = rpc(field_int(1, a.count) + field_int(2, 1), metadata=md, timeout=a.timeout)
                for r in it:
                    replies.append(decode(r))
                trailers = list(it.trailing_metadata() or [])
            elif a.call == "upload":
                rpc = ch.stream_unary(SVC + "UploadOrders", request_serializer=ident, response_deserializer=ident)
                reqs = (order(str(i), payload=b"x" * 1024) for i in range(a.count))
                resp, call = rpc.with_call(reqs, metadata=md, timeout=a.timeout)
                replies.append(decode(resp))
                trailers = list(call.trailing_metadata() or [])
            elif a.call == "chat":
                rpc = ch.stream_stream(SVC + "Chat", request_serializer=ident, response_deserializer=ident)
                it = rpc((order(str(i)) for i in range(a.count)), metadata=md, timeout=a.timeout)
                for r in it:
                    replies.append(decode(r))
                trailers = list(it.trailing_metadata() or [])
            elif a.call == "sleep":
                rpc = ch.unary_unary(SVC + "Sleep", request_serializer=ident, response_deserializer=ident)
                resp, call = rpc.with_call(field_int(1, 5000), metadata=md, timeout=a.timeout)
                replies.append(decode(resp))
            else:
                print("unknown call " + a.call, file=sys.stderr)
                return 2
            code, details = "OK", ""
        except grpc.RpcError as e:
            code, details = e.code().name, e.details() or ""
            trailers = list(e.trailing_metadata() or [])
    print(json.dumps({
        "code": code,
        "details": details,
        "replies": replies,
        "trailers": {k: v for k, v in trailers if isinstance(v, str)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
