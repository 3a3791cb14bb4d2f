"""An independent HPACK peer (Debian python3-hpack) for the differential test in
test/fuzz/hpack.fuzz.test.ts. One JSON request per line on stdin, one JSON reply per line on
stdout. Octet strings travel as hex, so names and values may hold any octet.

  {"op": "new"}                     a new connection: a fresh encoder and decoder
  {"op": "encode", "fields": [[name, value, sensitive], ...], "huffman": bool, "tableSize": n | null}
      -> {"block": hex, "tableSize": octets the encoder's dynamic table holds after it,
          "decoded": the block as this side's own decoder reads it, [[name, value, never-indexed], ...],
          or the text of its refusal}
  {"op": "decode", "block": hex}    -> {"fields": [[name, value, sensitive], ...]} or {"error": text}
"""
import json
import sys

from hpack import Decoder, Encoder

encoder = Encoder()
decoder = Decoder()
# Reads what `encoder` writes, in step with it: which fields went out never-indexed is the
# encoder's choice (an exact static-table match is sent indexed even when asked to be sensitive).
mirror = Decoder()


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    req = json.loads(line)
    op = req["op"]
    if op == "new":
        encoder = Encoder()
        decoder = Decoder()
        mirror = Decoder()
        reply({"ok": True})
    elif op == "encode":
        if req.get("tableSize") is not None:
            encoder.header_table_size = req["tableSize"]
        fields = [(bytes.fromhex(n), bytes.fromhex(v), bool(s)) for n, v, s in req["fields"]]
        block = encoder.encode(fields, huffman=req["huffman"])
        try:
            decoded = [[h[0].hex(), h[1].hex(), not h.indexable] for h in mirror.decode(block, raw=True)]
        except Exception as err:  # noqa: BLE001 - e.g. a size update above the decoder's 4096
            decoded = f"{type(err).__name__}: {err}"
        reply({"block": block.hex(), "tableSize": encoder.header_table._current_size, "decoded": decoded})
    elif op == "decode":
        try:
            out = decoder.decode(bytes.fromhex(req["block"]), raw=True)
            reply({"fields": [[h[0].hex(), h[1].hex(), not h.indexable] for h in out]})
        except Exception as err:  # noqa: BLE001 - the reply carries any refusal
            reply({"error": f"{type(err).__name__}: {err}"})
    else:
        reply({"error": f"unknown op {op}"})
