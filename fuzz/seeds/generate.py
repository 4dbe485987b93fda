#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (valid inputs the fuzzers mutate from).

Run from anywhere: python3 fuzz/seeds/generate.py. Layouts follow vima/src/wire.rs,
vima/src/config.rs and dpdk-transport/src/wire.rs; every seed is accepted by its parser
(checked when the targets run them: `cargo fuzz run <target> seeds/<target> -- -runs=0`).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# vima::wire: magic, version, kind, vs_id, flags, src, dst, body_len, page, request_id.
def message(kind, body=b"", page=0x205, flags=0, src=1, dst=0, vs_id=1, rid=7):
    return struct.pack("<HBBHHHHIQQ", 0x5643, 1, kind, vs_id, flags, src, dst,
                       len(body), page, rid) + body

PAGE = bytes(range(256)) * 16
MESSAGES = {
    "read_req": message(0x01),
    "write_req_upgrade": message(0x02, flags=1),
    "forward_read": message(0x03, struct.pack("<HHHH", 2, 0, 0, 0), src=0, dst=1),
    "forward_write": message(0x04, struct.pack("<HHHH", 0, 0, 0, 0), src=2, dst=1),
    "invalidate": message(0x05, src=0, dst=2),
    "invalidate_ack": message(0x06, src=2, dst=0),
    "page_data_exclusive": message(0x07, PAGE, flags=1, src=0, dst=1),
    "upgrade_grant": message(0x08, src=0, dst=1),
    "writeback": message(0x09, PAGE, src=1, dst=0),
    "unblock": message(0x0a),
    "nack": message(0x0b, src=0, dst=1),
    "ipi": message(0x20, struct.pack("<IB3x", 3, 40), page=0),
    "vp_start": message(0x21, struct.pack("<IIQQQ", 1, 0, 0x200000, 0x180000, 9), page=0),
    "console_line": message(0x22, struct.pack("<II", 0, 5) + b"hello", page=0),
    "vs_exit": message(0x23, struct.pack("<Q", 3), page=0),
    "heartbeat": message(0x24, struct.pack("<Q", 42), page=0),
}

# vima::config: a 72-byte header, then nodes, VPs, memory ranges, devices, command line.
def config(nodes, vps, ranges, devices, cmdline, logical=32 << 20):
    node_b = b"".join(struct.pack("<II", n, 0) for n in nodes)
    vp_b = b"".join(struct.pack("<II", i, n) for i, n in enumerate(vps))
    range_b = b"".join(struct.pack("<QQII", b, s, n, 0) for b, s, n in ranges)
    dev_b = b"".join(struct.pack("<IIII", k, i, n, 0) for k, i, n in devices)
    offsets = [72]
    for part in (node_b, vp_b, range_b, dev_b):
        offsets.append(offsets[-1] + len(part))
    total = offsets[-1] + len(cmdline)
    header = struct.pack("<8IQQ6I", 0x414D4956, 1, total, len(nodes), len(vps),
                         len(ranges), len(devices), len(cmdline), 2_000_000, logical,
                         *offsets, 0)
    assert len(header) == 72
    return header + node_b + vp_b + range_b + dev_b + cmdline

CONFIGS = {
    "one_node": config([0], [0], [(0, 32 << 20, 0)], [(1, 0, 0)], b"hello"),
    "two_nodes": config([0, 1], [0, 0, 1, 1], [(0, 16 << 20, 0), (16 << 20, 16 << 20, 1)],
                        [(1, 0, 0)], b"matmul 64"),
}
# vima_call_args: call number, 5 arguments, range address and length, logical bytes,
# alignment, alignment shift, then the configuration.
CALLS = {
    "console_write": struct.pack("<Q5QQQQQB", 0, 0x201000, 5, 0, 0, 0, 0x201000, 5,
                                 32 << 20, 1, 0),
    "spin_wait": struct.pack("<Q5QQQQQB", 6, 0x300008, 0, 100, 0, 0, 0x300008, 8,
                             32 << 20, 8, 3),
}

# dpdk_transport::wire: magic, version, kind, flags, tag_len, cluster, src, dst, session,
# seq, ack, sack, payload_len, echo, reserved (2 bytes), payload, tag.
def packet(kind, payload=b"", tag=b"", seq=0, ack=0, sack=0, echo=0):
    header = struct.pack("<IBBBBIIIIIIQHI2x", int.from_bytes(b"CVMW", "little"), 1, kind, 0,
                         len(tag), 77, 0, 1, 0x1234, seq, ack, sack, len(payload), echo)
    assert len(header) == 48
    return header + payload + tag

PACKETS = {
    "data_read_req": packet(1, MESSAGES["read_req"], seq=5, ack=3),
    "data_page": packet(1, MESSAGES["page_data_exclusive"], tag=bytes(16), seq=9),
    "ack_sack": packet(2, ack=10, sack=0b1011, echo=0x99),
    "heartbeat": packet(3, tag=bytes(16)),
}

def frame(op, node, data):
    return bytes([op, node]) + struct.pack("<H", len(data)) + data

# engine_messages: node 1 reads page 5 (home 1 in the target's map is page % 3: page 6),
# a forged grant, an invalidation nobody asked for.
ENGINE = {
    "read_then_grant": frame(1, 2, bytes([0x01]))
    + frame(0, 1, message(0x01, page=6, src=2, dst=1, rid=1))
    + frame(0, 2, message(0x07, PAGE, page=6, src=1, dst=2, rid=1)),
    "forged_invalidate": frame(0, 0, message(0x05, page=7, src=2, dst=0)),
    "write_race": frame(1, 0, bytes([0x09])) + frame(1, 2, bytes([0x09]))
    + frame(0, 1, message(0x02, page=6, src=0, dst=1, rid=1))
    + frame(0, 1, message(0x02, page=6, src=2, dst=1, rid=1)),
}

# nic_ring: one 32-byte ring entry, then 8-byte stores [what, slot, word, 0, value u32]:
# what 0..3 = SQ tail, SQ head, CQ tail, CQ head; 4/5 = a word of an SQ/CQ entry.
def store(what, value, slot=0, word=0):
    return bytes([what, slot, word, 0]) + struct.pack("<I", value)

RING = {
    "three_submissions": bytes(32) + store(0, 3) + store(4, 1, slot=1),
    "doorbell_past_the_ring": bytes(32) + store(0, 1000) + store(2, 0xFFFF_FFFF),
    "completions_wrapping": bytes(32) + store(3, 0xFFFF_FFFE) + store(2, 2) + store(5, 7),
}

def write(target, seeds):
    """Writes `seeds` into seeds/<target>/ (inputs saved from crashes stay)."""
    folder = os.path.join(HERE, target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)

write("wire_decode", MESSAGES)
write("vima_call_args", {f"{c}_{k}": CALLS[c] + v for c in CALLS for k, v in CONFIGS.items()})
write("transport_packet", PACKETS)
write("engine_messages", ENGINE)
write("nic_ring", RING)
examples = os.path.join(ROOT, "examples")
toml = {n: open(os.path.join(examples, n), "rb").read()
        for n in os.listdir(examples) if n.endswith(".toml")}
toml["dpdk.toml"] = b"""[cluster]
transport = "dpdk"

[server]
vps_per_node = 1
mem_mib_per_node = 16
cmdline = "hello"

[dpdk]
link = "memif"

[[nodes]]
id = 0
address = "10.0.0.1:7100"

[[nodes]]
id = 1
address = "10.0.0.2:7100"
fabric = "offload"
"""
write("cluster_toml", toml)
