// Package events holds what the orders and billing services of the orders-billing example
// share: the topics, the JSON events written to them, and topic creation.
package events

import (
	"context"
	"errors"

	"github.com/runnel-io/runnel/client"
)

// The topics, and the partitions they are created with.
const (
	OrdersTopic   = "orders"   // Order events, keyed by customer
	InvoicesTopic = "invoices" // Invoice events, keyed by customer
	Partitions    = 3
)

// Order is an order placed by a customer, the value of a record of OrdersTopic.
type Order struct {
	ID          string `json:"order_id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

// Invoice bills one order, the value of a record of InvoicesTopic.
type Invoice struct {
	OrderID     string `json:"order_id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
	// TotalCents is what the customer was billed so far, this invoice included.
	TotalCents int64 `json:"total_cents"`
}

// EnsureTopic creates topic with Partitions partitions unless it exists already.
func EnsureTopic(ctx context.Context, cl *client.Client, topic string) error {
	err := cl.CreateTopic(ctx, topic, Partitions, 1, nil)
	if e := (*client.Error)(nil); errors.As(err, &e) && e.Reason == "TOPIC_ALREADY_EXISTS" {
		return nil
	}
	return err
}
