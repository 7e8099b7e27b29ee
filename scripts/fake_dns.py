#!/usr/bin/env python3
"""A tiny DNS server for tests: answers every A query under `.missive.test` with
127.0.0.1 (AAAA and other types: no records), everything else NXDOMAIN.

Usage: python3 scripts/fake_dns.py ADDRESS [PORT]   (UDP; port 53 by default, as
resolv.conf cannot name another)
"""
import socket
import struct
import sys

ZONE = b"missive.test"


def qname(packet, offset):
    labels = []
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1:offset + 1 + length])
        offset += 1 + length
    return b".".join(labels), offset + 1


def answer(query):
    ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return None
    name, end = qname(query, 12)
    qtype, _qclass = struct.unpack("!HH", query[end:end + 4])
    question = query[12:end + 4]
    ours = name.lower() == ZONE or name.lower().endswith(b"." + ZONE)
    rcode = 0 if ours else 3
    records = b""
    count = 0
    if ours and qtype == 1:
        # Pointer to the question's name, type A, class IN, TTL 5, 4 bytes.
        records = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + socket.inet_aton("127.0.0.1")
        count = 1
    header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, count, 0, 0)
    return header + question + records


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 53))
    while True:
        data, peer = sock.recvfrom(512)
        try:
            reply = answer(data)
        except (IndexError, struct.error):
            reply = None
        if reply:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
