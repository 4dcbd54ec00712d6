<?php
/*
 * The talk's PHP write model (slides 18-27, 38-40) condensed into one script, on php-amqplib:
 * AbstractMessage, JsonMessageSerializer, MessageQueue and RabbitMqMessageQueueWriter, which
 * opens a connection per message, declares the durable topic exchange (slide 25) and publishes
 * the JSON envelope persistent with the message's routing key.
 *
 * PHP's habits are kept: payload values come from "database rows", so numbers are strings
 * ("userId":"7"); class names are namespaced (json_encode writes "App\\Mail\\..."); "/" is
 * escaped as "\/". One addition for the test's sake: publisher confirms and mandatory, so the
 * script fails (exit 2) when the broker refused or could not route anything.
 *
 * Publishes, in order:
 * - 5 x App\Mail\SendAdExpiredMail (mailer.ad.expired), ads 1..5, "retryStrategy":"repeat"
 *   with the talk's intervals; ads 2 and 4 have no price (null), the others "19.99" etc.;
 * - 1 x App\Billing\ConfirmPayment (billing.payment.confirmed), retried once after 0.2 s;
 * - 1 x App\Stats\RecordAdView (stats.ad.viewed), a type the worker does not know.
 * Prints one JSON line per message: {"className", "routingKey", "body"} (body as sent).
 *
 * Usage: php php_producer.php AMQP_URL EXCHANGE
 */

namespace Lepus\Talk {
    require_once 'PhpAmqpLib/autoload.php';

    use PhpAmqpLib\Connection\AMQPStreamConnection;
    use PhpAmqpLib\Message\AMQPMessage;

    interface MessageInterface
    {
        public function getQueueName(): string;
        public function getPayload(): array;
        public function getMetadata(): array;
    }

    abstract class AbstractMessage implements MessageInterface
    {
        protected $payload = [];
        protected $metadata = [];

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
    }

    class JsonMessageSerializer
    {
        const FIELD_PAYLOAD = 'payload';
        const FIELD_METADATA = 'metadata';

        public function serialize(MessageInterface $message): string
        {
            return json_encode([
                self::FIELD_PAYLOAD => $message->getPayload(),
                self::FIELD_METADATA => $message->getMetadata(),
            ]);
        }
    }

    /** Where the talk's "queue name" goes: an exchange and a routing key. */
    class RabbitMqMessageQueueWriter
    {
        private $url;
        private $exchange;

        public function __construct(array $url, string $exchange)
        {
            $this->url = $url;
            $this->exchange = $exchange;
        }

        public function write(string $queueName, string $payload)
        {
            $u = $this->url;
            $connection = new AMQPStreamConnection($u['host'], $u['port'], $u['user'], $u['pass'], $u['vhost']);
            $channel = $connection->channel();
            $channel->confirm_select();
            $refused = [];
            $channel->set_nack_handler(function (AMQPMessage $m) use (&$refused) {
                $refused[] = 'nacked';
            });
            $channel->set_return_listener(function ($code, $text, $exchange, $key) use (&$refused) {
                $refused[] = "returned $code $text ($key)";
            });
            $channel->exchange_declare($this->exchange, 'topic', false, true, false);
            $message = new AMQPMessage($payload, ['delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT]);
            $channel->basic_publish($message, $this->exchange, $queueName, true);
            $channel->wait_for_pending_acks_returns(5);
            $channel->close();
            $connection->close();
            if ($refused) {
                fwrite(STDERR, "broker refused $queueName: " . implode(', ', $refused) . "\n");
                exit(2);
            }
        }
    }

    class MessageQueue
    {
        private $writer;
        private $serializer;

        public function __construct(RabbitMqMessageQueueWriter $writer, JsonMessageSerializer $serializer)
        {
            $this->writer = $writer;
            $this->serializer = $serializer;
        }

        public function send(MessageInterface $message): string
        {
            $body = $this->serializer->serialize($message);
            $this->writer->write($message->getQueueName(), $body);
            return $body;
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

namespace App\Mail {
    use Lepus\Talk\AbstractMessage;

    class SendAdExpiredMail extends AbstractMessage
    {
        protected $metadata = [
            'retryStrategy' => 'repeat',
            'retryLimit' => '5',
            'retryCount' => 0,
            'retryInterval' => [15, 30, 60, 300, 86400],
        ];

        /** A row as PDO hands it over: every column a string, NULL as null. */
        public function fromRow(array $ad)
        {
            $this->payload = [
                'adId' => $ad['id'],
                'userId' => $ad['user_id'],
                'url' => 'https://example.com/ad/' . $ad['id'],
                'price' => $ad['price'],
            ];
        }

        public function getQueueName(): string
        {
            return 'mailer.ad.expired';
        }
    }
}

namespace App\Billing {
    use Lepus\Talk\AbstractMessage;

    class ConfirmPayment extends AbstractMessage
    {
        protected $metadata = [
            'retryStrategy' => 'repeat',
            'retryLimit' => '3',
            'retryCount' => 0,
            'retryInterval' => [0.2],
        ];

        public function setPayment(string $paymentId, string $amount)
        {
            $this->payload['paymentId'] = $paymentId;
            $this->payload['amount'] = $amount;
        }

        public function getQueueName(): string
        {
            return 'billing.payment.confirmed';
        }
    }
}

namespace App\Stats {
    use Lepus\Talk\AbstractMessage;

    class RecordAdView extends AbstractMessage
    {
        protected $metadata = ['retryStrategy' => 'ignore'];

        public function setAdId($adId)
        {
            $this->payload['adId'] = $adId;
        }

        public function getQueueName(): string
        {
            return 'stats.ad.viewed';
        }
    }
}

namespace {
    use Lepus\Talk\JsonMessageSerializer;
    use Lepus\Talk\MessageQueue;
    use Lepus\Talk\RabbitMqMessageQueueWriter;

    if ($argc !== 3) {
        fwrite(STDERR, "usage: php php_producer.php AMQP_URL EXCHANGE\n");
        exit(64);
    }
    $queue = new MessageQueue(
        new RabbitMqMessageQueueWriter(Lepus\Talk\parse_amqp_url($argv[1]), $argv[2]),
        new JsonMessageSerializer()
    );

    $messages = [];
    $rows = [
        ['id' => '1', 'user_id' => '7', 'price' => '19.99'],
        ['id' => '2', 'user_id' => '7', 'price' => null],
        ['id' => '3', 'user_id' => '8', 'price' => '5'],
        ['id' => '4', 'user_id' => '9', 'price' => null],
        ['id' => '5', 'user_id' => '4294967296', 'price' => '0.5'],
    ];
    foreach ($rows as $row) {
        $mail = new App\Mail\SendAdExpiredMail();
        $mail->fromRow($row);
        $messages[] = $mail;
    }
    $payment = new App\Billing\ConfirmPayment();
    $payment->setPayment('1001', '49.90');
    $messages[] = $payment;
    $view = new App\Stats\RecordAdView();
    $view->setAdId('3');
    $messages[] = $view;

    foreach ($messages as $message) {
        $body = $queue->send($message);
        echo json_encode([
            'className' => get_class($message),
            'routingKey' => $message->getQueueName(),
            'body' => $body,
        ], JSON_UNESCAPED_SLASHES), "\n";
    }
}
