#!/usr/bin/env python3
"""Publishes the talk's JSON envelope the way the PHP producer did (slides 19, 24, 39-40):
no AMQP properties at all, numbers as numeric strings, an escaped slash, an unknown metadata
key. Publisher confirms on, mandatory: exits non-zero if the broker refused anything.

Usage: pika_producer.py AMQP_URL EXCHANGE ROUTING_KEY COUNT
"""
import json
import sys

import pika

url, exchange, routing_key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.confirm_delivery()
for ad_id in range(count):
    body = {
        "payload": {"adId": ad_id, "url": "https://example.com/ad/%d" % ad_id},
        "metadata": {
            "className": "SendAdExpiredMail",
            "retryStrategy": "repeat",
            "retryLimit": "5",
            "retryCount": "0",
            "retryInterval": [15, 30, 60, 300, 86400],
            "phpRequestId": "req-%d" % ad_id,
        },
    }
    # PHP's json_encode escapes "/" as "\/": do the same so the worker sees real PHP bytes.
    raw = json.dumps(body).replace("/", "\\/").encode()
    channel.basic_publish(exchange, routing_key, raw, mandatory=True)
connection.close()
print("published", count)
