#!/usr/bin/env python3
"""Generate topic and headers routing vectors from a live RabbitMQ broker.

Usage: python3 tests/conformance/generate.py [amqp-host] (default 127.0.0.1, guest/guest)
Needs `pip install pika`. Writes topic.json and headers.json next to this script.

For each case group, a temporary exchange is declared, every pattern (topic) or argument
table (headers) is bound to its own exclusive queue, every key/header table is published
with its index as body (with publisher confirms), and the queues are drained to record
which binding received which message. Temporary exchanges and queues are auto-deleted.
"""
import json
import os
import struct
import sys
import time

import pika
from pika import data

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"


class Typed:
    """A field value with an explicit AMQP type tag (pika cannot send floats, bytes widths)."""

    FORMATS = {"b": "b", "B": "B", "s": "h", "u": "H", "I": "i", "i": "I", "l": "q",
               "T": "Q", "f": "f", "d": "d", "t": "B"}

    def __init__(self, tag, value):
        self.tag, self.value = tag, value


_encode = data.encode_value


def _encode_typed(pieces, value):
    if isinstance(value, Typed):
        tag = value.tag
        if tag == "V":
            pieces.append(b"V")
            return 1
        if tag in ("S", "x"):
            raw = value.value.encode() if isinstance(value.value, str) else value.value
            pieces.append(struct.pack(">cI", tag.encode(), len(raw)) + raw)
            return 5 + len(raw)
        packed = struct.pack(">c" + Typed.FORMATS[tag], tag.encode(), value.value)
        pieces.append(packed)
        return len(packed)
    return _encode(pieces, value)


data.encode_value = _encode_typed


def S(v): return Typed("S", v)
def V(): return Typed("V", None)


def connect():
    params = pika.ConnectionParameters(HOST, credentials=pika.PlainCredentials("guest", "guest"))
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def run_group(ch, kind, bindings, messages):
    """Returns, per message, the sorted indices of the bindings that received it."""
    ex = "lepus.conformance.%s.%d" % (kind, time.time_ns())
    ch.exchange_declare(ex, kind, auto_delete=True)
    queues = []
    for b in bindings:
        q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
        if kind == "topic":
            ch.queue_bind(q, ex, routing_key=b)
        else:
            ch.queue_bind(q, ex, routing_key="", arguments=b)
        queues.append(q)
    for i, m in enumerate(messages):
        if kind == "topic":
            ch.basic_publish(ex, m, str(i).encode())
        else:
            ch.basic_publish(ex, "", str(i).encode(), pika.BasicProperties(headers=m))
    got = [[] for _ in messages]
    for bi, q in enumerate(queues):
        while True:
            method, _props, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                break
            got[int(body)].append(bi)
        ch.queue_delete(q)
    ch.exchange_delete(ex)
    return [sorted(g) for g in got]


def words(n, last="a"):
    return ".".join(["a"] * (n - 1) + [last])


TOPIC_GROUPS = [
    # (patterns, keys): one exchange each
    (
        ["", ".", "..", "*", "#", "*.*", "*.*.*", "#.#", "a", "a.", ".a", "a.*", "*.a", "a.#",
         "#.a", "#.", ".#", "*.", ".*", "a..b", "a.*.b", "a.#.b", "a.#.#.b", "#.a.#", "#.*",
         "*.#", "*.#.*", "#.*.#", "a*b", "a.*b", "#a", "a#", "**", "##", "*a", "b",
         "mailer.ad.expired", "mailer.ad.*", "mailer.user.*", "mailer.#", "#.expired",
         "mailer.*.expired", "*.ad.#", "Mailer.#", "MAILER", "é.*", "*.ü", "日本.#",
         "#.#.#.b", "a.b.c.d.e.f.g.h.i.j", "#.j", "a.#.j", "*.*.*.*.*.*.*.*.*.*"],
        ["", ".", "..", "...", "a", "b", "a.", ".a", "a..b", "a.b", "a.x.b", "a.x.y.b",
         "a.b.b", "b.a", "b.a.b", "x.a.y", "mailer", "mailer.", "mailer.ad",
         "mailer.ad.expired", "mailer.ad.moderated", "mailer.user.created",
         "mailer.user.ad.expired", "Mailer.ad.expired", "MAILER", "mailer.AD.expired",
         "a*b", "axb", "a.*b", "a.xb", "#a", "a#", "*", "#", "**", "*a", "é.ü", "é", "e.ü",
         "日本.東京", "日本", "a.b.c.d.e.f.g.h.i.j", "a.b.c.d.e.f.g.h.i.j.k",
         words(30, "b"), words(30, "a"), words(128, "b"), words(128, "j"),
         "x" * 255, "a." * 127 + "b"],
    ),
    (
        # Deep `#` chains, kept to short keys: the broker's backtracking is exponential.
        ["#.#.#.#.#.#.b", "#.b.#.b.#", "*.#.*.#.*", "#.#.#.#", "#.*.#.*.#", "a.#.a.#.a"],
        ["", "b", "a.b", "b.b", "a.a.a.a.b", "a.a.a.a.a.a", "a.b.a.b.a", "b.a.a.a.b",
         "a.a.a.a.a.a.a.a.a.b", "a", "a.a", "a.a.a", "a..a..a", "b.b.b"],
    ),
]


def typed_json(v):
    """[tag, value] for a header value."""
    if isinstance(v, Typed):
        if v.tag == "x":
            return ["x", v.value.decode() if isinstance(v.value, bytes) else v.value]
        return [v.tag, v.value]
    if v is None:
        return ["V", None]
    if isinstance(v, bool):
        return ["t", v]
    if isinstance(v, str):
        return ["S", v]
    raise TypeError(v)


def table_json(t):
    return [[k, *typed_json(v)] for k, v in t.items()]


I = lambda v: Typed("I", v)  # noqa: E731
HEADER_BINDINGS = [
    {},
    {"x-match": "all"},
    {"x-match": "any"},
    {"x-match": "all-with-x"},
    {"x-match": "any-with-x"},
    {"format": "pdf"},
    {"x-match": "all", "format": "pdf", "type": "report"},
    {"x-match": "any", "format": "pdf", "type": "report"},
    {"format": None},
    {"x-match": "any", "format": None, "size": None},
    {"x-match": "all", "format": None, "size": None},
    {"x-tenant": "a"},
    {"x-match": "any", "x-tenant": "a"},
    {"x-match": "all-with-x", "x-tenant": "a"},
    {"x-match": "any-with-x", "x-tenant": "a", "format": "zip"},
    {"x-match": "all-with-x", "x-tenant": "a", "format": "pdf"},
    {"x-match": "all-with-x", "x-tenant": None},
    {"x-match": "any", "x-tenant": "a", "format": "pdf"},
    {"n": I(5)},
    {"n": "5"},
    {"n": Typed("d", 5.0)},
    {"n": Typed("l", 5)},
    {"n": Typed("B", 5)},
    {"n": Typed("b", -1)},
    {"n": True},
    {"n": False},
    {"n": Typed("x", b"5")},
    {"n": Typed("d", 5.5)},
    {"n": Typed("d", 0.1)},
    {"n": Typed("T", 5)},
    {"n": Typed("i", 4294967295)},
    {"n": Typed("l", 9007199254740993)},
    {"n": I(0)},
    {"x-match": "all", "n": I(5), "format": None},
    {"x-match": "any", "n": I(5), "format": "pdf"},
    {"Format": "pdf"},
    {"format": "PDF"},
    {"format": ""},
    {"format": "日本"},
]

HEADER_MESSAGES = [
    None,
    {},
    {"format": "pdf"},
    {"format": "zip"},
    {"format": "pdf", "type": "report"},
    {"type": "report"},
    {"format": None},
    {"size": I(1)},
    {"format": "pdf", "size": I(1)},
    {"x-tenant": "a"},
    {"x-tenant": "a", "format": "pdf"},
    {"x-tenant": "b", "format": "zip"},
    {"x-tenant": None},
    {"x-match": "any"},
    {"n": I(5)},
    {"n": Typed("l", 5)},
    {"n": Typed("B", 5)},
    {"n": Typed("s", 5)},
    {"n": Typed("u", 5)},
    {"n": "5"},
    {"n": Typed("x", b"5")},
    {"n": Typed("d", 5.0)},
    {"n": Typed("f", 5.0)},
    {"n": Typed("d", 5.5)},
    {"n": Typed("f", 5.5)},
    {"n": Typed("d", 0.1)},
    {"n": Typed("f", 0.1)},
    {"n": True},
    {"n": False},
    {"n": Typed("b", 1)},
    {"n": I(0)},
    {"n": Typed("b", -1)},
    {"n": Typed("T", 5)},
    {"n": None},
    {"n": I(-1)},
    {"n": Typed("l", 4294967295)},
    {"n": Typed("i", 4294967295)},
    {"n": Typed("l", 9007199254740993)},
    {"n": Typed("d", 9007199254740992.0)},
    {"n": Typed("d", -0.0)},
    {"n": I(5), "format": "x"},
    {"n": I(5), "format": "pdf"},
    {"Format": "pdf"},
    {"format": "PDF"},
    {"format": ""},
    {"format": "日本"},
]


def write(name, meta, vectors):
    """One vector per line, so diffs stay readable."""
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        head = dict(meta, count=len(vectors))
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "vectors": [\n')
        f.write(",\n".join(json.dumps(v, ensure_ascii=False) for v in vectors))
        f.write("\n]}\n")


def main():
    conn, ch = connect()
    version = str(conn._impl.server_properties.get("version", ""))
    vectors = []
    for patterns, keys in TOPIC_GROUPS:
        got = run_group(ch, "topic", patterns, keys)
        for ki, key in enumerate(keys):
            for pi, pattern in enumerate(patterns):
                vectors.append({"pattern": pattern, "key": key, "match": pi in got[ki]})
    write("topic.json", {"broker": "RabbitMQ " + version,
                         "generator": "tests/conformance/generate.py"}, vectors)
    print("topic: %d vectors (%d matches)" % (len(vectors), sum(v["match"] for v in vectors)))

    got = run_group(ch, "headers", HEADER_BINDINGS, HEADER_MESSAGES)
    hv = []
    for mi, m in enumerate(HEADER_MESSAGES):
        for bi, b in enumerate(HEADER_BINDINGS):
            hv.append({"args": table_json(b), "headers": table_json(m or {}),
                       "headers_absent": m is None, "match": bi in got[mi]})
    write("headers.json", {"broker": "RabbitMQ " + version,
                           "generator": "tests/conformance/generate.py",
                           "value_encoding": "[name, AMQP field type tag, value]"}, hv)
    print("headers: %d vectors (%d matches)" % (len(hv), sum(v["match"] for v in hv)))
    conn.close()


if __name__ == "__main__":
    main()
