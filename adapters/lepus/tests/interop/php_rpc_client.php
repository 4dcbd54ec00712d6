<?php
/*
 * The talk's asynchronous RPC (slides 41-43) condensed into one script, on php-amqplib: a
 * RespondingMessageQueue sends the user page's four requests at once (`sendMultiple`), then
 * gathers their replies (`getAsyncResponses`), and sends GetUserFriends, a `ResponseRPC`
 * whose reply queue is named in its metadata (`response_queue` =
 * "user-friends-<id>_<uniqid>", declared by the client before sending, as
 * `openResponseQueue` did).
 *
 * The four requests carry standard RPC properties: `reply_to` (one exclusive, server-named
 * callback queue) and `correlation_id` (uniqid). GetUserFriends carries no properties at all,
 * as in the talk: its queue is its correlation. Payloads come from a "database row", so the
 * user id is the string "7". Replies are unserialized the talk's way, `new $className()`, so
 * each reply must name an existing (namespaced) PHP class.
 *
 * Prints one JSON line per reply: the request's class, correlation id and reply address, and
 * the reply's queue, correlation id, `type` and `content_type` properties, PHP class, payload
 * and metadata.
 * Exit status: 0 when every request got exactly one matching reply within TIMEOUT_SECONDS;
 * 3 otherwise (what is missing or unmatched goes to stderr).
 *
 * Usage: php php_rpc_client.php AMQP_URL EXCHANGE TIMEOUT_SECONDS
 */

namespace Lepus\Talk {
    require_once 'PhpAmqpLib/autoload.php';

    use PhpAmqpLib\Channel\AMQPChannel;
    use PhpAmqpLib\Exception\AMQPTimeoutException;
    use PhpAmqpLib\Message\AMQPMessage;

    interface MessageInterface
    {
        public function getQueueName(): string;
        public function getPayload(): array;
        public function getMetadata(): array;
    }

    interface ResponseRPC
    {
        public function getResponseQueueName(): string;
    }

    abstract class AbstractMessage implements MessageInterface
    {
        protected $payload = [];
        protected $metadata = [];

        public function getQueueName(): string
        {
            return '';
        }

        public function getPayload(): array
        {
            return $this->payload;
        }

        public function getMetadata(): array
        {
            return array_merge($this->metadata, ['className' => static::class]);
        }

        public function setMetadata(array $metadata)
        {
            $this->metadata = $metadata;
        }

        public function setPayload(array $payload)
        {
            $this->payload = $payload;
        }

        public function setUserId($userId)
        {
            $this->payload['userId'] = $userId;
        }
    }

    class JsonMessageSerializer
    {
        public function serialize(MessageInterface $message): string
        {
            return json_encode(['payload' => $message->getPayload(), 'metadata' => $message->getMetadata()]);
        }

        /** The talk's unserialize: the class named by the message is instantiated. */
        public function unserialize(string $serialized): MessageInterface
        {
            $unserialized = json_decode($serialized, true);
            $messageType = $unserialized['metadata']['className'];
            if (!class_exists($messageType) || !is_subclass_of($messageType, MessageInterface::class)) {
                throw new \UnexpectedValueException("reply names no message class: $messageType");
            }
            $message = new $messageType();
            $message->setPayload($unserialized['payload']);
            $message->setMetadata($unserialized['metadata']);
            return $message;
        }
    }

    class RespondingMessageQueue
    {
        private $channel;
        private $exchange;
        private $serializer;
        private $callbackQueue;
        /** correlation id or response queue => what was asked */
        private $pending = [];
        private $responses = [];
        private $unmatched = [];

        public function __construct(AMQPChannel $channel, string $exchange, JsonMessageSerializer $serializer)
        {
            $this->channel = $channel;
            $this->exchange = $exchange;
            $this->serializer = $serializer;
            [$this->callbackQueue] = $channel->queue_declare('', false, false, true, true);
            $channel->basic_consume($this->callbackQueue, '', false, true, false, false, [$this, 'catchResponse']);
        }

        public function sendMultiple(array $messages)
        {
            foreach ($messages as $message) {
                $this->send($message);
            }
        }

        public function send(MessageInterface $message)
        {
            if ($message instanceof ResponseRPC) {
                $this->openResponseQueue($message);
                $key = $message->getResponseQueueName();
                $properties = [];
                $asked = ['correlationId' => null, 'replyTo' => $key];
            } else {
                $key = uniqid('', true);
                $properties = ['reply_to' => $this->callbackQueue, 'correlation_id' => $key];
                $asked = ['correlationId' => $key, 'replyTo' => $this->callbackQueue];
            }
            $this->pending[$key] = ['request' => get_class($message)] + $asked;
            $body = $this->serializer->serialize($message);
            $this->channel->basic_publish(new AMQPMessage($body, $properties), $this->exchange, $message->getQueueName(), true);
        }

        /** Waits until every request has its reply or `$timeout` seconds passed. */
        public function getAsyncResponses(float $timeout): array
        {
            $deadline = microtime(true) + $timeout;
            while ($this->pending && ($left = $deadline - microtime(true)) > 0) {
                try {
                    $this->channel->wait(null, false, $left);
                } catch (AMQPTimeoutException $e) {
                    break;
                }
            }
            // A moment more to catch a duplicate reply, should the server send one.
            try {
                $this->channel->wait(null, false, 0.2);
            } catch (AMQPTimeoutException $e) {
            }
            return $this->responses;
        }

        public function missing(): array
        {
            return $this->pending;
        }

        public function unmatched(): array
        {
            return $this->unmatched;
        }

        /** The talk's `openResponseQueue`, the queue made auto-delete so no test leaves it. */
        private function openResponseQueue(ResponseRPC $message)
        {
            $queue = $message->getResponseQueueName();
            $this->channel->queue_declare($queue, false, false, false, true);
            $this->channel->basic_consume($queue, '', false, true, false, false, [$this, 'catchResponse']);
        }

        public function catchResponse(AMQPMessage $reply)
        {
            $queue = $reply->getRoutingKey();
            $correlationId = $reply->has('correlation_id') ? $reply->get('correlation_id') : null;
            $key = $queue === $this->callbackQueue ? $correlationId : $queue;
            if ($key === null || !isset($this->pending[$key])) {
                $this->unmatched[] = "$queue / " . var_export($correlationId, true);
                return;
            }
            $asked = $this->pending[$key];
            unset($this->pending[$key]);
            $message = $this->serializer->unserialize($reply->getBody());
            $this->responses[] = $message;
            echo json_encode($asked + [
                'replyQueue' => $queue,
                'replyCorrelationId' => $correlationId,
                'type' => $reply->has('type') ? $reply->get('type') : null,
                'contentType' => $reply->has('content_type') ? $reply->get('content_type') : null,
                'phpClass' => get_class($message),
                'payload' => $message->getPayload(),
                'metadata' => $message->getMetadata(),
            ], JSON_UNESCAPED_SLASHES), "\n";
        }
    }

    /** amqp://user:pass@host:port/vhost, as AMQP_ADDR spells it. */
    function parse_amqp_url(string $url): array
    {
        $p = parse_url($url);
        $path = isset($p['path']) ? substr($p['path'], 1) : '';
        return [
            'host' => $p['host'] ?? '127.0.0.1',
            'port' => $p['port'] ?? 5672,
            'user' => isset($p['user']) ? rawurldecode($p['user']) : 'guest',
            'pass' => isset($p['pass']) ? rawurldecode($p['pass']) : 'guest',
            'vhost' => $path === '' ? '/' : rawurldecode($path),
        ];
    }
}

namespace App\Rpc {
    use Lepus\Talk\AbstractMessage;
    use Lepus\Talk\ResponseRPC;

    class GetActiveAds extends AbstractMessage
    {
        public function getQueueName(): string
        {
            return 'rpc.ads.active';
        }
    }

    class GetObservedAds extends AbstractMessage
    {
        public function getQueueName(): string
        {
            return 'rpc.ads.observed';
        }
    }

    class GetRecommendations extends AbstractMessage
    {
        public function getQueueName(): string
        {
            return 'rpc.ads.recommended';
        }
    }

    class GetMessages extends AbstractMessage
    {
        public function getQueueName(): string
        {
            return 'rpc.messages.unread';
        }
    }

    /** Slide 41, `user_id` key and all. */
    class GetUserFriends extends AbstractMessage implements ResponseRPC
    {
        public function setUserId($userId)
        {
            $this->payload['user_id'] = $userId;
        }

        public function getQueueName(): string
        {
            return 'rpc.users.friends';
        }

        public function getResponseQueueName(): string
        {
            if (!isset($this->metadata['response_queue'])) {
                $this->metadata['response_queue'] = 'user-friends-' . $this->payload['user_id'] . '_' . uniqid('', true);
            }
            return $this->metadata['response_queue'];
        }
    }

    // The replies' classes, which `new $className()` instantiates.
    class ActiveAds extends AbstractMessage
    {
    }

    class ObservedAds extends AbstractMessage
    {
    }

    class Recommendations extends AbstractMessage
    {
    }

    class UnreadMessages extends AbstractMessage
    {
    }

    class UserFriends extends AbstractMessage
    {
    }
}

namespace {
    use Lepus\Talk\JsonMessageSerializer;
    use Lepus\Talk\RespondingMessageQueue;
    use PhpAmqpLib\Connection\AMQPStreamConnection;

    if ($argc !== 4) {
        fwrite(STDERR, "usage: php php_rpc_client.php AMQP_URL EXCHANGE TIMEOUT_SECONDS\n");
        exit(64);
    }
    $u = Lepus\Talk\parse_amqp_url($argv[1]);
    $timeout = (float) $argv[3];
    $connection = new AMQPStreamConnection(
        $u['host'], $u['port'], $u['user'], $u['pass'], $u['vhost'],
        false, 'AMQPLAIN', null, 'en_US', 3.0, max(3.0, $timeout + 1.0)
    );
    $channel = $connection->channel();
    $unroutable = [];
    $channel->set_return_listener(function ($code, $text, $exchange, $key) use (&$unroutable) {
        $unroutable[] = "$code $text ($key)";
    });
    $messageQueue = new RespondingMessageQueue($channel, $argv[2], new JsonMessageSerializer());

    $user = ['id' => '7']; // a database row: the id is a string
    $getActiveAds = new App\Rpc\GetActiveAds();
    $getActiveAds->setUserId($user['id']);
    $getObservedAds = new App\Rpc\GetObservedAds();
    $getObservedAds->setUserId($user['id']);
    $getRecommendations = new App\Rpc\GetRecommendations();
    $getRecommendations->setUserId($user['id']);
    $getMessages = new App\Rpc\GetMessages();
    $getMessages->setUserId($user['id']);
    $messageQueue->sendMultiple([$getActiveAds, $getObservedAds, $getRecommendations, $getMessages]);
    $getUserFriends = new App\Rpc\GetUserFriends();
    $getUserFriends->setUserId($user['id']);
    $messageQueue->send($getUserFriends);

    /* do some processing */
    $userAggregateData = $messageQueue->getAsyncResponses($timeout);

    $channel->close();
    $connection->close();
    foreach ($messageQueue->missing() as $key => $asked) {
        fwrite(STDERR, "no reply to {$asked['request']} ($key)\n");
    }
    foreach ($messageQueue->unmatched() as $what) {
        fwrite(STDERR, "reply nobody waits for: $what\n");
    }
    foreach ($unroutable as $what) {
        fwrite(STDERR, "request returned unroutable: $what\n");
    }
    $ok = count($userAggregateData) === 5 && !$messageQueue->missing() && !$messageQueue->unmatched() && !$unroutable;
    exit($ok ? 0 : 3);
}
