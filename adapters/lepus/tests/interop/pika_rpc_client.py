#!/usr/bin/env python3
"""An RPC client in the style of RabbitMQ tutorial 6, written against Lepus's documented wire
format: an exclusive server-named callback queue, `reply_to` and `correlation_id` (uuid4)
properties, and the talk's JSON envelope with PHP habits (numbers as numeric strings).

Sends COUNT `GetUserFriends` requests (user ids 1..COUNT) at once to the default exchange with
QUEUE as routing key; every fifth one is addressed the PHP way instead (slide 41): no
properties, the callback queue and the correlation id in the envelope's metadata
(`response_queue`, `correlationId`). Then one `BanUser` (its handler always fails) and one
`GetUserEnemies` (a type the server does not know). Waits for every reply until TIMEOUT, checks
each reply's correlation id against the requests sent, and prints one JSON line per reply.

Usage: pika_rpc_client.py AMQP_URL QUEUE COUNT TIMEOUT_SECONDS
Exit status: 0 when every request got exactly one matching reply, 3 otherwise.
"""
import json
import sys
import time
import uuid

import pika

url, queue, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
callback_queue = channel.queue_declare(queue="", exclusive=True).method.queue

pending = {}  # correlation id -> what was asked
unmatched = []


def on_response(ch, method, props, body):
    asked = pending.pop(props.correlation_id, None)
    if asked is None:
        unmatched.append(props.correlation_id)
        return
    print(json.dumps({
        "request": asked,
        "correlation_id": props.correlation_id,
        "type": props.type,
        "content_type": props.content_type,
        "headers": props.headers or {},
        "body": json.loads(body),
    }), flush=True)


channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)


def call(class_name, payload, asked, php_style=False):
    corr_id = str(uuid.uuid4())
    metadata = {
        "className": class_name,
        "retryStrategy": "ignore",
        "retryLimit": "5",
        "retryCount": "0",
    }
    if php_style:
        metadata["response_queue"] = callback_queue
        metadata["correlationId"] = corr_id
        props = pika.BasicProperties()
    else:
        props = pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id)
    pending[corr_id] = asked
    body = json.dumps({"payload": payload, "metadata": metadata})
    channel.basic_publish(exchange="", routing_key=queue, properties=props, body=body)


for user_id in range(1, count + 1):
    php_style = user_id % 5 == 0
    asked = {"class": "GetUserFriends", "user_id": user_id,
             "addressing": "metadata" if php_style else "properties"}
    call("GetUserFriends", {"user_id": user_id}, asked, php_style)
call("BanUser", {"user_id": 13}, {"class": "BanUser", "user_id": 13, "addressing": "properties"})
call("GetUserEnemies", {"user_id": 13},
     {"class": "GetUserEnemies", "user_id": 13, "addressing": "properties"})

deadline = time.monotonic() + timeout
while pending and time.monotonic() < deadline:
    connection.process_data_events(time_limit=min(0.2, max(0.0, deadline - time.monotonic())))
# A moment more to catch a duplicate reply, should the server send one.
connection.process_data_events(time_limit=0.2)
connection.close()

for corr_id, asked in pending.items():
    print("no reply to %s (%s)" % (asked, corr_id), file=sys.stderr)
for corr_id in unmatched:
    print("reply with an unknown correlation id %r" % corr_id, file=sys.stderr)
sys.exit(0 if not pending and not unmatched else 3)
