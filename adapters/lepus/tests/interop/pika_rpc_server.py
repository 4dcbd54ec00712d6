#!/usr/bin/env python3
"""An RPC server in the style of RabbitMQ tutorial 6, written by a Python developer from Lepus's
documented wire format: requests are JSON envelopes whose `metadata.className` names the type;
a reply goes to the default exchange with `reply_to` as routing key and the request's
`correlation_id`, then the request is acked. It sets no `type` or `content_type` property.

- `GetUserFriends` {"user_id": n}: the reply envelope
  {"payload": {"user_id": n, "friends": [10n+1, 10n+2]}, "metadata": {"className": "UserFriends"}};
- `Fib` {"n": n}: tutorial 6's answer, the bare number as text (no envelope);
- `BanUser`: Lepus's error reply, the `x-lepus-rpc-error` header and the `LepusRpcError`
  envelope, with the message "moderators only".

Declares QUEUE (auto-delete) bound to the existing topic EXCHANGE with BINDING, prints one JSON
line {"ready": true}, then one JSON line per request (its properties and metadata). Stops after
MAX_SECONDS if nobody stops it first.

Usage: pika_rpc_server.py AMQP_URL EXCHANGE QUEUE BINDING MAX_SECONDS
"""
import json
import sys

import pika

url, exchange, queue, binding, max_seconds = sys.argv[1:6]

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare(queue=queue, auto_delete=True)
channel.queue_bind(queue=queue, exchange=exchange, routing_key=binding)


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def on_request(ch, method, props, body):
    request = json.loads(body)
    class_name = request["metadata"]["className"]
    payload = request["payload"]
    print(json.dumps({
        "className": class_name,
        "reply_to": props.reply_to,
        "correlation_id": props.correlation_id,
        "type": props.type,
        "content_type": props.content_type,
        "metadata": request["metadata"],
    }), flush=True)

    headers = None
    if class_name == "GetUserFriends":
        user_id = payload["user_id"]
        reply = json.dumps({
            "payload": {"user_id": user_id, "friends": [10 * user_id + 1, 10 * user_id + 2]},
            "metadata": {"className": "UserFriends"},
        })
    elif class_name == "Fib":
        reply = str(fib(payload["n"]))
    else:
        headers = {"x-lepus-rpc-error": "rejected"}
        reply = json.dumps({
            "payload": {"error": "moderators only", "kind": "rejected"},
            "metadata": {"className": "LepusRpcError"},
        })

    ch.basic_publish(
        exchange="",
        routing_key=props.reply_to,
        properties=pika.BasicProperties(correlation_id=props.correlation_id, headers=headers),
        body=reply,
    )
    ch.basic_ack(delivery_tag=method.delivery_tag)


channel.basic_qos(prefetch_count=10)
channel.basic_consume(queue=queue, on_message_callback=on_request)
connection.call_later(float(max_seconds), channel.stop_consuming)
print(json.dumps({"ready": True}), flush=True)
channel.start_consuming()
connection.close()
