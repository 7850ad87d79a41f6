// Package all registers every broker driver that sluice ships (bus.driver: kafka, redis, amqp, nats,
// postgres). The sluice command imports it; a Go program that embeds sluice imports only the driver
// it uses (github.com/sluicelog/sluice/brokers/<driver>), and links only that driver's client.
package all
