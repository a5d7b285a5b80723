# The package test's DNS server: answers TXT for one name (an SPF record), NXDOMAIN for other
# names, over UDP on 127.0.0.1:PORT. Usage: ci-dns.py PORT NAME TEXT
import socket
import struct
import sys

port, name, text = int(sys.argv[1]), sys.argv[2].lower().rstrip(".") + ".", sys.argv[3].encode()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
while True:
    data, peer = sock.recvfrom(4096)
    labels, off = [], 12
    while data[off]:
        labels.append(data[off + 1:off + 1 + data[off]].decode("ascii", "replace"))
        off += data[off] + 1
    qtype = struct.unpack(">H", data[off + 1:off + 3])[0]
    question = data[12:off + 5]
    asked = ".".join(labels).lower() + "."
    if asked == name and qtype == 16:
        rdata = bytes([len(text)]) + text
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 60, len(rdata)) + rdata
        sock.sendto(struct.pack(">HHHHHH", struct.unpack(">H", data[:2])[0], 0x8400, 1, 1, 0, 0) + question + answer, peer)
    else:
        code = 0 if asked == name else 3
        sock.sendto(struct.pack(">HHHHHH", struct.unpack(">H", data[:2])[0], 0x8400 | code, 1, 0, 0, 0) + question, peer)
