package e2e

import (
	amqp "github.com/rabbitmq/amqp091-go"

	"seckill/queue"
)

func deleteQueues(url string, t queue.Topology) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	_ = t.Delete(ch)
}
