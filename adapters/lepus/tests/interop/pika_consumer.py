#!/usr/bin/env python3
"""Reads COUNT messages from QUEUE with pika (RabbitMQ tutorial style, manual acks) and prints
one JSON line per message: the body decoded as JSON and the AMQP properties a consumer sees.

Usage: pika_consumer.py AMQP_URL QUEUE COUNT TIMEOUT_SECONDS
"""
import json
import sys

import pika

url, queue, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
seen = 0
for method, props, body in channel.consume(queue, inactivity_timeout=timeout):
    if method is None:
        break
    print(json.dumps({
        "body": json.loads(body),
        "content_type": props.content_type,
        "type": props.type,
        "message_id": props.message_id,
        "delivery_mode": props.delivery_mode,
        "timestamp": props.timestamp,
        "routing_key": method.routing_key,
    }), flush=True)
    channel.basic_ack(method.delivery_tag)
    seen += 1
    if seen == count:
        break
channel.cancel()
connection.close()
sys.exit(0 if seen == count else 3)
