package sluice

// The sink types a pipeline can open besides the built-in postgres and blob: each registers itself
// (subscribers.RegisterSinkType) and declares its settings; one import line each.
import (
	_ "github.com/sluicelog/sluice/subscribers/console" // sink: console
)
